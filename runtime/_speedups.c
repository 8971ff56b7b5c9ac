/* The steady-state call's per-Variable passes in C (runtime/steady_state.py).
 *
 * Built as the optional extension hijaxc.runtime._speedups; where it is absent (no compiler at
 * install time, or HIJAXC_PURE_PYTHON=1) steady_state.py does the same with C-level ``map``s over
 * slot descriptors, about three times slower per Variable.
 *
 *   gather(descr, objects, n) -> (values, counts)
 *       values: [descr.__get__(o) for o in objects], a new list;
 *       counts: bytes, for each of the first n values, what ``sys.getrefcount`` reports for it
 *               while ``map`` iterates ``values`` (3 where the slot and ``values`` are its only
 *               holders, as donation.py measures for the Python passes), capped at 255.
 *   scatter(descr, objects, values) -> None
 *       descr.__set__(objects[i], values[i]) for i in range(len(objects)); ``values`` (a list or
 *       a tuple) may be longer.  On an error the earlier writes stay done (as with the Python loop).
 *
 * ``descr`` is any data descriptor (here the flax Variable's value slot); it is called through its
 * type's tp_descr_get / tp_descr_set, as attribute access would, without the attribute lookup.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
gather(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "gather(descr, objects: list, n: int)");
        return NULL;
    }
    PyObject *descr = args[0], *objects = args[1];
    descrgetfunc get = Py_TYPE(descr)->tp_descr_get;
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (get == NULL) {
        PyErr_SetString(PyExc_TypeError, "gather: descr has no __get__");
        return NULL;
    }
    if (n == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t size = PyList_GET_SIZE(objects);
    if (n < 0 || n > size)
        n = size;
    PyObject *values = PyList_New(size);
    if (values == NULL)
        return NULL;
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n);
    if (counts == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    unsigned char *c = (unsigned char *)PyBytes_AS_STRING(counts);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (i >= PyList_GET_SIZE(objects)) { /* a __get__ running Python code shrank it */
            Py_DECREF(values);
            Py_DECREF(counts);
            PyErr_SetString(PyExc_RuntimeError, "gather: the list changed size");
            return NULL;
        }
        PyObject *o = PyList_GET_ITEM(objects, i);
        Py_INCREF(o);
        PyObject *v = get(descr, o, (PyObject *)Py_TYPE(o));
        Py_DECREF(o);
        if (v == NULL) {
            Py_DECREF(values);
            Py_DECREF(counts);
            return NULL;
        }
        PyList_SET_ITEM(values, i, v); /* steals the new reference: slot + values hold it */
        if (i < n) {
            Py_ssize_t rc = Py_REFCNT(v) + 1; /* + the iterator's reference, as in Python */
            c[i] = (unsigned char)(rc > 255 ? 255 : rc);
        }
    }
    PyObject *out = PyTuple_Pack(2, values, counts);
    Py_DECREF(values);
    Py_DECREF(counts);
    return out;
}

static PyObject *
scatter(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1]) || !(PyList_Check(args[2]) || PyTuple_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "scatter(descr, objects: list, values: list | tuple)");
        return NULL;
    }
    PyObject *descr = args[0], *objects = args[1], *values = args[2];
    descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
    if (set == NULL) {
        PyErr_SetString(PyExc_TypeError, "scatter: descr has no __set__");
        return NULL;
    }
    Py_ssize_t size = PyList_GET_SIZE(objects);
    if (PySequence_Fast_GET_SIZE(values) < size) {
        PyErr_SetString(PyExc_ValueError, "scatter: fewer values than objects");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        /* the list may shrink under a __set__ that runs Python code: re-check each time */
        if (i >= PyList_GET_SIZE(objects) || i >= PySequence_Fast_GET_SIZE(values)) {
            PyErr_SetString(PyExc_RuntimeError, "scatter: a list changed size");
            return NULL;
        }
        PyObject *o = PyList_GET_ITEM(objects, i), *v = PySequence_Fast_GET_ITEM(values, i);
        Py_INCREF(o);
        Py_INCREF(v);
        int err = set(descr, o, v);
        Py_DECREF(v);
        Py_DECREF(o);
        if (err < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"gather", (PyCFunction)(void (*)(void))gather, METH_FASTCALL,
     "gather(descr, objects, n) -> (values, reference counts of the first n as bytes)"},
    {"scatter", (PyCFunction)(void (*)(void))scatter, METH_FASTCALL,
     "scatter(descr, objects, values): descr.__set__(objects[i], values[i]) for each object"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_speedups",
    .m_doc = "The steady-state call's per-Variable passes in C (see runtime/steady_state.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
