/* The entry of a steady-state call in C: the base class of hijaxc.api.JitFunction.
 *
 *   Dispatch
 *       ``f(*args, **kwargs)`` runs, with no Python frame, what ``JitFunction._call`` does in the
 *       steady state:
 *
 *           fast = self._step._fast
 *           if fast is not None and fast.epoch == EPOCH[0]:
 *               try:
 *                   out = fast.call(args, kwargs)
 *               except (Exception, Rediscover) as e:
 *                   return step.after_fast_error(e, args, kwargs)
 *               if out is not MISS:
 *                   return out
 *           return step.slow_call(args, kwargs)
 *
 *       and calls ``self._call(args, kwargs)`` instead where that does more: the instance has
 *       bound arguments (``_plain`` false), no step yet, or ``nnx.cached_partial`` left a static
 *       cache in flax's graph context for it to consume.
 *   configure(epoch, miss, rediscover, graph_context, step_type, fast_type)
 *       the module-level objects above, and the types of ``step`` (runtime/step.Step) and of
 *       ``step._fast`` (steady_state.Fast), whose slots ``_fast``, ``epoch`` and ``call`` are read
 *       at their offsets; once (hijaxc/api.py).  Until then every call takes ``self._call``.
 *
 * Without keyword arguments, ``fast.call`` gets one shared empty dict (it only reads it; the
 * recorded calls check ``not kwargs``), and the Python paths a new one, as for ``**kwargs``.
 *
 * A Python frame is ~0.5 us of a ~15 us call of a small model (issue 15).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

#include "_speedups.h"

static PyObject *epoch, *miss, *rediscover, *graph_context, *no_kwargs;
static PyTypeObject *step_type, *fast_type;
/* of the slots Step._fast, Fast.epoch, Fast.call; -1: getattr */
static Py_ssize_t fast_offset = -1, epoch_offset = -1, call_offset = -1;
static PyObject *str_fast, *str_epoch, *str_call, *str_slow_call, *str_after_fast_error,
    *str__call, *str_tmp_static_cache;

typedef struct {
    PyObject_HEAD
    PyObject *step;     /* _step: the compiled Step, or NULL before the first call */
    char plain;         /* _plain: no bound arguments, so the steady state may be tried here */
} Dispatch;

/* 1 where flax's graph context holds a static cache for the next transform (or on an error) */
static int
cache_pending(void)
{
    if (graph_context == NULL || graph_context == Py_None)
        return 0;
    PyObject *cache = PyObject_GetAttr(graph_context, str_tmp_static_cache);
    if (cache == NULL) {
        PyErr_Clear();
        return 1; /* let the Python path say what is wrong */
    }
    int pending = cache != Py_None;
    Py_DECREF(cache);
    return pending;
}

/* o.<name>: the slot at offset where o is exactly of type, else getattr; a new reference or NULL
   (no error set) */
static PyObject *
read_slot(PyObject *o, PyTypeObject *type, Py_ssize_t offset, PyObject *name)
{
    if (offset >= 0 && Py_TYPE(o) == type) {
        PyObject *v = *(PyObject **)((char *)o + offset);
        return v != NULL ? Py_NewRef(v) : NULL;
    }
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* step._fast.call where step._fast's epoch is the current one, else NULL (no error set) */
static PyObject *
current_call(PyObject *step)
{
    PyObject *fast = read_slot(step, step_type, fast_offset, str_fast);
    if (fast == NULL || fast == Py_None) {
        Py_XDECREF(fast);
        return NULL;
    }
    PyObject *e = read_slot(fast, fast_type, epoch_offset, str_epoch);
    PyObject *now = PyList_Check(epoch) && PyList_GET_SIZE(epoch) > 0
        ? PyList_GET_ITEM(epoch, 0) : NULL;
    int same = e != NULL && now != NULL && (e == now || PyObject_RichCompareBool(e, now, Py_EQ) == 1);
    Py_XDECREF(e);
    PyErr_Clear();
    PyObject *call = same ? read_slot(fast, fast_type, call_offset, str_call) : NULL;
    Py_DECREF(fast);
    return call;
}

/* o.<name>([exc,] args, kwargs), with a new dict where kwargs is NULL (as for **kwargs) */
static PyObject *
call_step(PyObject *o, PyObject *name, PyObject *exc, PyObject *args, PyObject *kwargs)
{
    PyObject *kw = kwargs != NULL ? Py_NewRef(kwargs) : PyDict_New();
    if (kw == NULL)
        return NULL;
    PyObject *r = exc != NULL ? PyObject_CallMethodObjArgs(o, name, exc, args, kw, NULL)
                              : PyObject_CallMethodObjArgs(o, name, args, kw, NULL);
    Py_DECREF(kw);
    return r;
}

/* the fast call raised: step.after_fast_error(e, args, kwargs) for an Exception or a
   Rediscover, as the ``except`` clause in the comment above; else re-raise */
static PyObject *
after_error(PyObject *step, PyObject *args, PyObject *kwargs)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception) && !PyErr_ExceptionMatches(rediscover))
        return NULL;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = call_step(step, str_after_fast_error, value, args, kwargs);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return r;
}

static PyObject *
dispatch_call(Dispatch *self, PyObject *args, PyObject *kwargs)
{
    PyObject *step = self->step;
    if (!self->plain || step == NULL || step == Py_None || epoch == NULL || cache_pending())
        return call_step((PyObject *)self, str__call, NULL, args, kwargs);
    Py_INCREF(step);
    PyObject *out, *call = current_call(step);
    if (call != NULL) {
        PyObject *argv[2] = {args, kwargs != NULL ? kwargs : no_kwargs};
        out = PyObject_Vectorcall(call, argv, 2, NULL);
        Py_DECREF(call);
        if (out == NULL)
            out = after_error(step, args, kwargs);
        else if (out == miss)
            Py_CLEAR(out);
        if (out != NULL || PyErr_Occurred()) {
            Py_DECREF(step);
            return out;
        }
    }
    out = call_step(step, str_slow_call, NULL, args, kwargs);
    Py_DECREF(step);
    return out;
}

static int
dispatch_traverse(Dispatch *self, visitproc visit, void *arg)
{
    Py_VISIT(self->step); /* (a subclass's type and __dict__: subtype_traverse visits them) */
    return 0;
}

static int
dispatch_clear(Dispatch *self)
{
    Py_CLEAR(self->step);
    return 0;
}

static void
dispatch_dealloc(Dispatch *self)
{
    /* (reached through subtype_dealloc, which decrefs a subclass's type itself) */
    PyObject_GC_UnTrack(self);
    dispatch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef dispatch_members[] = {
    {"_step", T_OBJECT, offsetof(Dispatch, step), 0, "the compiled Step (None before the first call)"},
    {"_plain", T_BOOL, offsetof(Dispatch, plain), 0, "no bound arguments: try the steady state"},
    {NULL},
};

static PyTypeObject DispatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hijaxc.runtime._speedups.Dispatch",
    .tp_doc = "The entry of a steady-state call, with no Python frame (see runtime/_dispatch.c).",
    .tp_basicsize = sizeof(Dispatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_call = (ternaryfunc)dispatch_call,
    .tp_dealloc = (destructor)dispatch_dealloc,
    .tp_traverse = (traverseproc)dispatch_traverse,
    .tp_clear = (inquiry)dispatch_clear,
    .tp_members = dispatch_members,
};

/* the offset of type's object slot called name, or -1 (then Dispatch uses getattr) */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)type, name);
    Py_ssize_t offset = -1;
    if (d != NULL && Py_TYPE(d) == &PyMemberDescr_Type) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX || m->type == T_OBJECT)
            offset = m->offset;
    }
    Py_XDECREF(d);
    PyErr_Clear();
    return offset;
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_Check(args[0]) || !PyType_Check(args[4]) || !PyType_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "configure(epoch: list, miss, rediscover, graph_context, "
                                         "step_type, fast_type)");
        return NULL;
    }
    if (no_kwargs == NULL && (no_kwargs = PyDict_New()) == NULL)
        return NULL;
    Py_XSETREF(epoch, Py_NewRef(args[0]));
    Py_XSETREF(miss, Py_NewRef(args[1]));
    Py_XSETREF(rediscover, Py_NewRef(args[2]));
    Py_XSETREF(graph_context, Py_NewRef(args[3]));
    Py_XSETREF(step_type, (PyTypeObject *)Py_NewRef(args[4]));
    Py_XSETREF(fast_type, (PyTypeObject *)Py_NewRef(args[5]));
    fast_offset = slot_offset(step_type, "_fast");
    epoch_offset = slot_offset(fast_type, "epoch");
    call_offset = slot_offset(fast_type, "call");
    Py_RETURN_NONE;
}

static PyMethodDef configure_def = {
    "configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
    "configure(epoch, miss, rediscover, graph_context, step_type, fast_type): what Dispatch reads"};

int
hijaxc_add_dispatch(PyObject *m)
{
#define INTERN(var, s) \
    if (var == NULL && (var = PyUnicode_InternFromString(s)) == NULL) return -1;
    INTERN(str_fast, "_fast") INTERN(str_epoch, "epoch") INTERN(str_call, "call")
    INTERN(str_slow_call, "slow_call") INTERN(str_after_fast_error, "after_fast_error")
    INTERN(str__call, "_call") INTERN(str_tmp_static_cache, "tmp_static_cache")
#undef INTERN
    if (PyType_Ready(&DispatchType) < 0
        || PyModule_AddObjectRef(m, "Dispatch", (PyObject *)&DispatchType) < 0)
        return -1;
    PyObject *f = PyCFunction_New(&configure_def, NULL);
    if (f == NULL)
        return -1;
    int err = PyModule_AddObjectRef(m, "configure", f);
    Py_DECREF(f);
    return err;
}
