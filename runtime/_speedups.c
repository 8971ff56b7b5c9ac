/* The steady-state call in C (runtime/steady_state.py).
 *
 * Built as the optional extension hijaxc.runtime._speedups; where it is absent (no compiler at
 * install time, or HIJAXC_PURE_PYTHON=1) steady_state.py does the same in Python: C-level
 * ``map``s over slot descriptors (about three times slower per Variable) and a closure per layout.
 *
 *   gather(descr, objects, n) -> (values, counts)
 *       values: [descr.__get__(o) for o in objects], a new list;
 *       counts: bytes, for each of the first n values, what ``sys.getrefcount`` reports for it
 *               while ``map`` iterates ``values`` (3 where the slot and ``values`` are its only
 *               holders, as donation.py measures for the Python passes), capped at 255.
 *   scatter(descr, objects, values) -> None
 *       descr.__set__(objects[i], values[i]) for i in range(len(objects)); ``values`` (a list or
 *       a tuple) may be longer.  On an error the earlier writes stay done (as with the Python loop).
 *   FastCall(...)
 *       the steady-state call for the usual layout, ``call(args, kwargs)``: the same steps, in the
 *       same order, as the Python closure ``steady_state._make_call`` builds (see there).
 *   Boxer(cls)
 *       ``boxer(aux, children) -> cls((aux,))`` for a tuple subclass ``cls`` without instance
 *       dict: jax's unflatten of pure_step.PlanBox, with no Python frame.  It returns the box it
 *       made last where ``aux`` is the same object (a box is immutable): in the steady state
 *       every call unflattens the same plan.
 *   Dispatch, configure(...)
 *       the base class of hijaxc.api.JitFunction: its call with no Python frame
 *       (runtime/_dispatch.c).
 *
 * ``descr`` is any data descriptor (here the flax Variable's value slot); it is called through its
 * type's tp_descr_get / tp_descr_set, as attribute access would, without the attribute lookup.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <structmember.h>

#include "_speedups.h"

/* ------------------------------------------------------------------------ slot access */

/* The passes walk Variables scattered over the heap.  Where descr is a plain object slot (a
 * T_OBJECT_EX member, as __slots__ makes), they read and write it directly and prefetch the
 * objects AHEAD places on, and the values they hold AHEAD / 2 places on: on a large model the
 * Variables are rarely in cache between two calls, and each miss costs ~80 ns (gather + scatter
 * over 1,000 Variables: 150 us cold, 15 us warm).  Anything else -- another descriptor, an
 * object of another type, an empty slot -- goes through tp_descr_get/set, which raise as
 * attribute access would. */
#define AHEAD 16

typedef struct {
    Py_ssize_t offset;      /* of the slot in the object, or -1: call the descriptor */
    PyTypeObject *type;     /* the type the slot belongs to */
    PyTypeObject *seen;     /* the last object type that passed the type check */
} Slot;

static Slot
slot_of(PyObject *descr, int for_set)
{
    Slot slot = {-1, NULL, NULL};
    if (Py_TYPE(descr) != &PyMemberDescr_Type)
        return slot;
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX || (for_set && (m->flags & READONLY)))
        return slot;
    slot.offset = m->offset;
    slot.type = slot.seen = ((PyDescrObject *)descr)->d_type;
    return slot;
}

/* &o.slot, or NULL where o must go through the descriptor */
static inline PyObject **
slot_ptr(Slot *slot, PyObject *o)
{
    if (slot->offset < 0)
        return NULL;
    PyTypeObject *t = Py_TYPE(o);
    if (t != slot->seen) {
        if (!PyType_IsSubtype(t, slot->type))
            return NULL;
        slot->seen = t;
    }
    return (PyObject **)((char *)o + slot->offset);
}

/* prefetch objects[i + AHEAD] and the value in objects[i + AHEAD / 2]'s slot */
static inline void
prefetch(Slot *slot, PyObject *objects, Py_ssize_t i, Py_ssize_t size, int for_write)
{
    if (i + AHEAD < size)
        __builtin_prefetch(PyList_GET_ITEM(objects, i + AHEAD), 1);
    if (slot->offset >= 0 && i + AHEAD / 2 < size) {
        PyObject *o = PyList_GET_ITEM(objects, i + AHEAD / 2);
        if (Py_TYPE(o) == slot->seen) {
            PyObject *v = *(PyObject **)((char *)o + slot->offset);
            if (v != NULL)
                __builtin_prefetch(v, for_write);
        }
    }
}

/* ------------------------------------------------------------------------ the two passes */

/* values (a new list) and counts (new bytes) for gather(); 0, or -1 with an exception set */
static int
gather_list(PyObject *descr, PyObject *objects, Py_ssize_t n, PyObject **values_out,
            PyObject **counts_out)
{
    descrgetfunc get = Py_TYPE(descr)->tp_descr_get;
    if (get == NULL) {
        PyErr_SetString(PyExc_TypeError, "gather: descr has no __get__");
        return -1;
    }
    Py_ssize_t size = PyList_GET_SIZE(objects);
    if (n < 0 || n > size)
        n = size;
    PyObject *values = PyList_New(size);
    if (values == NULL)
        return -1;
    PyObject *counts = PyBytes_FromStringAndSize(NULL, n);
    if (counts == NULL) {
        Py_DECREF(values);
        return -1;
    }
    unsigned char *c = (unsigned char *)PyBytes_AS_STRING(counts);
    Slot slot = slot_of(descr, 0);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (i >= PyList_GET_SIZE(objects)) { /* a __get__ running Python code shrank it */
            PyErr_SetString(PyExc_RuntimeError, "gather: the list changed size");
            goto error;
        }
        prefetch(&slot, objects, i, PyList_GET_SIZE(objects), 0);
        PyObject *o = PyList_GET_ITEM(objects, i), *v;
        PyObject **p = slot_ptr(&slot, o);
        if (p != NULL && *p != NULL) {
            v = Py_NewRef(*p);
        }
        else {
            Py_INCREF(o);
            v = get(descr, o, (PyObject *)Py_TYPE(o));
            Py_DECREF(o);
            if (v == NULL)
                goto error;
        }
        PyList_SET_ITEM(values, i, v); /* steals the new reference: slot + values hold it */
        if (i < n) {
            Py_ssize_t rc = Py_REFCNT(v) + 1; /* + the iterator's reference, as in Python */
            c[i] = (unsigned char)(rc > 255 ? 255 : rc);
        }
    }
    *values_out = values;
    *counts_out = counts;
    return 0;
error:
    Py_DECREF(values); /* (the unfilled items are NULL: list_dealloc skips them) */
    Py_DECREF(counts);
    return -1;
}

/* descr.__set__(objects[i], values[i]) for each object; 0, or -1 with an exception set */
static int
scatter_list(PyObject *descr, PyObject *objects, PyObject *values)
{
    descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
    if (set == NULL) {
        PyErr_SetString(PyExc_TypeError, "scatter: descr has no __set__");
        return -1;
    }
    if (!(PyList_Check(values) || PyTuple_Check(values))) {
        PyErr_SetString(PyExc_TypeError, "scatter: values must be a list or a tuple");
        return -1;
    }
    Py_ssize_t size = PyList_GET_SIZE(objects);
    if (PySequence_Fast_GET_SIZE(values) < size) {
        PyErr_SetString(PyExc_ValueError, "scatter: fewer values than objects");
        return -1;
    }
    Slot slot = slot_of(descr, 1);
    for (Py_ssize_t i = 0; i < size; i++) {
        /* the lists may shrink where a write runs Python code (a __set__, or the old value's
           finalizer): re-check each time */
        if (i >= PyList_GET_SIZE(objects) || i >= PySequence_Fast_GET_SIZE(values)) {
            PyErr_SetString(PyExc_RuntimeError, "scatter: a list changed size");
            return -1;
        }
        prefetch(&slot, objects, i, PyList_GET_SIZE(objects), 1);
        PyObject *o = PyList_GET_ITEM(objects, i), *v = PySequence_Fast_GET_ITEM(values, i);
        PyObject **p = slot_ptr(&slot, o);
        if (p != NULL) {
            PyObject *old = *p;
            *p = Py_NewRef(v);
            Py_XDECREF(old);
            continue;
        }
        Py_INCREF(o);
        Py_INCREF(v);
        int err = set(descr, o, v);
        Py_DECREF(v);
        Py_DECREF(o);
        if (err < 0)
            return -1;
    }
    return 0;
}

static PyObject *
gather(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "gather(descr, objects: list, n: int)");
        return NULL;
    }
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    PyObject *values, *counts;
    if (gather_list(args[0], args[1], n, &values, &counts) < 0)
        return NULL;
    PyObject *out = PyTuple_Pack(2, values, counts);
    Py_DECREF(values);
    Py_DECREF(counts);
    return out;
}

static PyObject *
scatter(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "scatter(descr, objects: list, values: list | tuple)");
        return NULL;
    }
    if (scatter_list(args[0], args[1], args[2]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------ FastCall */

static PyObject *str_gather, *str_scatter, *str_choose, *str_compiled, *str_jitted, *str_split_at,
    *str_pack, *str_apply, *str_fast_calls;
static PyObject *one;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t n_args;      /* positional arguments of the recorded call */
    PyObject *checks;       /* tuple of (position, root object): compared by identity */
    PyObject *descr;        /* the Variables' value slot */
    PyObject *var_objs;     /* list: the Variables whose values are the first leaves, in order */
    Py_ssize_t n_counted;   /* reference counts read for the first n_counted (donation) */
    PyObject *plain_pos;    /* tuple of positions of plain-leaf arguments, appended in order */
    PyObject *leaf_types;   /* frozenset: the types a plain leaf may have */
    PyObject *donation;     /* steady_state.Donation: .choose(counts), .compiled, .pack(leaves) */
    PyObject *counts;       /* the counts of the last choice (NULL: none yet) */
    PyObject *jitted;       /* the compiled step for them: jitted(donated, kept) */
    Py_ssize_t split_at;    /* donated = leaves[:split_at], kept = the rest; -1: donation.pack */
    PyObject *plan;         /* the recorded write-back plan (simple) */
    PyObject *objects;      /* the split's objects, for plan.apply after a retrace */
    PyObject *update_objs;  /* list: the Variables written back from the first outputs */
    Py_ssize_t out_index;   /* the output leaf returned, or -1: out_of(new_leaves) */
    PyObject *out_of;
    PyObject *stats;        /* dict: stats["fast_calls"] += 1 */
    PyObject *miss;         /* returned where the steady state does not apply */
    PyObject *on_error;     /* on_error(exc, leaves): the jitted step raised exc (an Exception) */
    PyObject *passes;       /* dict whose "_gather" / "_scatter" are read on each call */
    PyObject *c_gather;     /* ... and taken as these C passes where they are these objects */
    PyObject *c_scatter;
} FastCall;

#define FASTCALL_OBJECTS(X) X(checks) X(descr) X(var_objs) X(plain_pos) X(leaf_types) \
    X(donation) X(counts) X(jitted) X(plan) X(objects) X(update_objs) X(out_of) X(stats) \
    X(miss) X(on_error) X(passes) X(c_gather) X(c_scatter)

static int
fastcall_traverse(FastCall *self, visitproc visit, void *arg)
{
#define VISIT(f) Py_VISIT(self->f);
    FASTCALL_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
fastcall_clear(FastCall *self)
{
#define CLEAR(f) Py_CLEAR(self->f);
    FASTCALL_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
fastcall_dealloc(FastCall *self)
{
    PyObject_GC_UnTrack(self);
    fastcall_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
fastcall_miss(FastCall *self)
{
    Py_INCREF(self->miss);
    return self->miss;
}

/* the step's input leaves: the Variables' values, then the plain arguments (1), or a miss (0),
   or an error (-1) */
static int
fastcall_leaves(FastCall *self, PyObject *args, PyObject **leaves, PyObject **counts)
{
    PyObject *g = PyDict_GetItemWithError(self->passes, str_gather);
    if (g == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "FastCall: no _gather");
        return -1;
    }
    if (g == self->c_gather) {
        if (gather_list(self->descr, self->var_objs, self->n_counted, leaves, counts) < 0)
            return -1;
    }
    else { /* the Python passes (or a test's): leaves, counts = _gather(var_objs, n_counted) */
        PyObject *n = PyLong_FromSsize_t(self->n_counted);
        if (n == NULL)
            return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(g, self->var_objs, n, NULL);
        Py_DECREF(n);
        if (r == NULL)
            return -1;
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2 || !PyList_Check(PyTuple_GET_ITEM(r, 0))) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "FastCall: _gather must return (list, bytes)");
            return -1;
        }
        *leaves = Py_NewRef(PyTuple_GET_ITEM(r, 0));
        *counts = Py_NewRef(PyTuple_GET_ITEM(r, 1));
        Py_DECREF(r);
    }
    Py_ssize_t n_plain = PyTuple_GET_SIZE(self->plain_pos);
    for (Py_ssize_t j = 0; j < n_plain; j++) {
        Py_ssize_t p = PyLong_AsSsize_t(PyTuple_GET_ITEM(self->plain_pos, j));
        PyObject *x = PyTuple_GET_ITEM(args, p); /* p < n_args, checked by the caller */
        int ok = PySet_Contains(self->leaf_types, (PyObject *)Py_TYPE(x));
        if (ok <= 0 || PyList_Append(*leaves, x) < 0) {
            Py_CLEAR(*leaves);
            Py_CLEAR(*counts);
            return ok == 0 ? 0 : -1;
        }
    }
    return 1;
}

/* the compiled step for these reference counts: the last choice, or Donation.choose(counts) */
static PyObject *
fastcall_jitted(FastCall *self, PyObject *counts)
{
    if (self->counts != NULL) {
        PyObject *last = self->counts;
        int same = PyBytes_CheckExact(counts) && PyBytes_CheckExact(last)
            ? PyBytes_GET_SIZE(counts) == PyBytes_GET_SIZE(last)
                  && memcmp(PyBytes_AS_STRING(counts), PyBytes_AS_STRING(last),
                            PyBytes_GET_SIZE(last)) == 0
            : PyObject_RichCompareBool(counts, last, Py_EQ);
        if (same < 0)
            return NULL;
        if (same)
            return Py_NewRef(self->jitted);
    }
    PyObject *r = PyObject_CallMethodOneArg(self->donation, str_choose, counts);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    PyObject *compiled = PyObject_GetAttr(self->donation, str_compiled);
    if (compiled == NULL)
        return NULL;
    PyObject *split_at = PyObject_GetAttr(compiled, str_split_at);
    Py_ssize_t k = split_at == NULL ? -1 : PyLong_AsSsize_t(split_at);
    Py_XDECREF(split_at);
    PyObject *jitted = k == -1 && PyErr_Occurred() ? NULL : PyObject_GetAttr(compiled, str_jitted);
    Py_DECREF(compiled);
    if (jitted == NULL)
        return NULL;
    self->split_at = k;
    Py_XSETREF(self->jitted, Py_NewRef(jitted));
    Py_XSETREF(self->counts, Py_NewRef(counts));
    return jitted;
}

/* the leaves as the compiled step takes them: (donated, kept), two new lists (donation.pack) */
static int
fastcall_pack(FastCall *self, PyObject *leaves, PyObject *packed[2])
{
    Py_ssize_t k = self->split_at, n = PyList_GET_SIZE(leaves);
    if (k < 0 || k > n) {
        PyObject *r = PyObject_CallMethodOneArg(self->donation, str_pack, leaves);
        if (r == NULL)
            return -1;
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "FastCall: pack must return (donated, kept)");
            return -1;
        }
        packed[0] = Py_NewRef(PyTuple_GET_ITEM(r, 0));
        packed[1] = Py_NewRef(PyTuple_GET_ITEM(r, 1));
        Py_DECREF(r);
        return 0;
    }
    packed[0] = k == n ? Py_NewRef(leaves) : PyList_GetSlice(leaves, 0, k);
    packed[1] = PyList_GetSlice(leaves, k, n);
    if (packed[0] == NULL || packed[1] == NULL) {
        Py_XDECREF(packed[0]);
        Py_XDECREF(packed[1]);
        return -1;
    }
    return 0;
}

/* the jitted step raised: on_error(exc, leaves) notes what was lost (an Exception only) */
static void
fastcall_note_error(FastCall *self, PyObject *leaves)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(self->on_error, value, leaves, NULL);
    if (r == NULL) /* the original error is the one to raise */
        PyErr_Clear();
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

static int
fastcall_count(FastCall *self)
{
    PyObject *n = PyDict_GetItemWithError(self->stats, str_fast_calls);
    if (n == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *m = PyNumber_Add(n, one);
    if (m == NULL)
        return -1;
    int err = PyDict_SetItem(self->stats, str_fast_calls, m);
    Py_DECREF(m);
    return err;
}

/* write back and return the result, from the step's outputs (new_leaves, box) */
static PyObject *
fastcall_finish(FastCall *self, PyObject *new_leaves, PyObject *box)
{
    PyObject *plan = PyTuple_Check(box) && PyTuple_GET_SIZE(box) > 0
        ? Py_NewRef(PyTuple_GET_ITEM(box, 0)) : PySequence_GetItem(box, 0);
    if (plan == NULL)
        return NULL;
    if (plan != self->plan) { /* a retrace changed the plan */
        PyObject *r = PyObject_CallMethodObjArgs(plan, str_apply, self->objects, new_leaves, NULL);
        Py_DECREF(plan);
        return r;
    }
    Py_DECREF(plan);
    PyObject *s = PyDict_GetItemWithError(self->passes, str_scatter);
    if (s == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "FastCall: no _scatter");
        return NULL;
    }
    if (s == self->c_scatter) {
        if (scatter_list(self->descr, self->update_objs, new_leaves) < 0)
            return NULL;
    }
    else {
        PyObject *r = PyObject_CallFunctionObjArgs(s, self->update_objs, new_leaves, NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    if (self->out_index < 0)
        return PyObject_CallOneArg(self->out_of, new_leaves);
    if (!(PyList_Check(new_leaves) || PyTuple_Check(new_leaves))
        || self->out_index >= PySequence_Fast_GET_SIZE(new_leaves)) {
        PyErr_SetString(PyExc_IndexError, "FastCall: no such output leaf");
        return NULL;
    }
    return Py_NewRef(PySequence_Fast_GET_ITEM(new_leaves, self->out_index));
}

static PyObject *
fastcall_vectorcall(FastCall *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL || !PyTuple_Check(argv[0])
        || !PyDict_Check(argv[1])) {
        PyErr_SetString(PyExc_TypeError, "FastCall(args: tuple, kwargs: dict)");
        return NULL;
    }
    PyObject *args = argv[0];
    if (PyTuple_GET_SIZE(args) != self->n_args || PyDict_GET_SIZE(argv[1]) != 0)
        return fastcall_miss(self);
    Py_ssize_t n_checks = PyTuple_GET_SIZE(self->checks);
    for (Py_ssize_t j = 0; j < n_checks; j++) {
        PyObject *check = PyTuple_GET_ITEM(self->checks, j);
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(check, 0));
        if (PyTuple_GET_ITEM(args, i) != PyTuple_GET_ITEM(check, 1))
            return fastcall_miss(self);
    }
    PyObject *leaves, *counts;
    int found = fastcall_leaves(self, args, &leaves, &counts);
    if (found <= 0)
        return found == 0 ? fastcall_miss(self) : NULL;
    PyObject *jitted = fastcall_jitted(self, counts);
    Py_DECREF(counts);
    if (jitted == NULL) {
        Py_DECREF(leaves);
        return NULL;
    }
    PyObject *packed[2];
    if (fastcall_pack(self, leaves, packed) < 0) {
        Py_DECREF(jitted);
        Py_DECREF(leaves);
        return NULL;
    }
    PyObject *out = PyObject_Vectorcall(jitted, packed, 2, NULL);
    Py_DECREF(packed[0]);
    Py_DECREF(packed[1]);
    Py_DECREF(jitted);
    if (out == NULL)
        fastcall_note_error(self, leaves);
    Py_DECREF(leaves);
    if (out == NULL)
        return NULL;
    PyObject *pair = PySequence_Fast(out, "FastCall: the step returned no (leaves, box)");
    Py_DECREF(out);
    if (pair == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        PyErr_SetString(PyExc_ValueError, "FastCall: the step returned no (leaves, box)");
        return NULL;
    }
    PyObject *result = NULL;
    if (fastcall_count(self) == 0)
        result = fastcall_finish(self, PySequence_Fast_GET_ITEM(pair, 0),
                                 PySequence_Fast_GET_ITEM(pair, 1));
    Py_DECREF(pair);
    return result;
}

static PyObject *
fastcall_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"n_args", "checks", "descr", "var_objs", "n_counted", "plain_pos",
                            "leaf_types", "donation", "plan", "objects", "update_objs",
                            "out_index", "out_of", "stats", "miss", "on_error", "passes",
                            "c_gather", "c_scatter", NULL};
    Py_ssize_t n_args, n_counted, out_index;
    PyObject *checks, *descr, *var_objs, *plain_pos, *leaf_types, *donation, *plan, *objects,
        *update_objs, *out_of, *stats, *miss, *on_error, *passes, *c_gather, *c_scatter;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "$nO!OO!nO!O!OOOO!nOO!OOO!OO:FastCall", names, &n_args, &PyTuple_Type,
            &checks, &descr, &PyList_Type, &var_objs, &n_counted, &PyTuple_Type, &plain_pos,
            &PyFrozenSet_Type, &leaf_types, &donation, &plan, &objects, &PyList_Type,
            &update_objs, &out_index, &out_of, &PyDict_Type, &stats, &miss, &on_error,
            &PyDict_Type, &passes, &c_gather, &c_scatter))
        return NULL;
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(checks); j++) {
        PyObject *c = PyTuple_GET_ITEM(checks, j);
        Py_ssize_t i = PyTuple_Check(c) && PyTuple_GET_SIZE(c) == 2
            ? PyLong_AsSsize_t(PyTuple_GET_ITEM(c, 0)) : -1;
        if (i < 0 || i >= n_args) {
            PyErr_SetString(PyExc_ValueError, "FastCall: checks must be (position, object)");
            return NULL;
        }
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(plain_pos); j++) {
        Py_ssize_t p = PyLong_AsSsize_t(PyTuple_GET_ITEM(plain_pos, j));
        if (p < 0 || p >= n_args) {
            PyErr_SetString(PyExc_ValueError, "FastCall: plain_pos must be argument positions");
            return NULL;
        }
    }
    FastCall *self = (FastCall *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)fastcall_vectorcall;
    self->n_args = n_args;
    self->n_counted = n_counted;
    self->out_index = out_index;
#define SET(f) self->f = Py_NewRef(f);
    SET(checks) SET(descr) SET(var_objs) SET(plain_pos) SET(leaf_types) SET(donation) SET(plan)
    SET(objects) SET(update_objs) SET(out_of) SET(stats) SET(miss) SET(on_error) SET(passes)
    SET(c_gather) SET(c_scatter)
#undef SET
    return (PyObject *)self;
}

static PyTypeObject FastCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hijaxc.runtime._speedups.FastCall",
    .tp_doc = "The steady-state call for the usual layout: call(args, kwargs) (see steady_state).",
    .tp_basicsize = sizeof(FastCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = fastcall_new,
    .tp_dealloc = (destructor)fastcall_dealloc,
    .tp_traverse = (traverseproc)fastcall_traverse,
    .tp_clear = (inquiry)fastcall_clear,
    .tp_vectorcall_offset = offsetof(FastCall, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------ Boxer */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyTypeObject *cls;
    PyObject *last;         /* the box made last (NULL: none yet) */
} Boxer;

static PyObject *
boxer_vectorcall(Boxer *self, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Boxer(aux, children)");
        return NULL;
    }
    if (self->last != NULL && PyTuple_GET_ITEM(self->last, 0) == argv[0])
        return Py_NewRef(self->last);
    PyObject *box = self->cls->tp_alloc(self->cls, 1);
    if (box == NULL)
        return NULL;
    PyTuple_SET_ITEM(box, 0, Py_NewRef(argv[0]));
    Py_XSETREF(self->last, Py_NewRef(box));
    return box;
}

static PyObject *
boxer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *cls;
    if (!PyArg_ParseTuple(args, "O!:Boxer", &PyType_Type, &cls))
        return NULL;
    PyTypeObject *t = (PyTypeObject *)cls;
    if (!PyType_IsSubtype(t, &PyTuple_Type) || t->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "Boxer: cls must be a tuple subclass with no __dict__");
        return NULL;
    }
    Boxer *self = (Boxer *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = (vectorcallfunc)boxer_vectorcall;
    self->cls = (PyTypeObject *)Py_NewRef(cls);
    return (PyObject *)self;
}

static int
boxer_traverse(Boxer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->cls);
    Py_VISIT(self->last);
    return 0;
}

static int
boxer_clear(Boxer *self)
{
    Py_CLEAR(self->cls);
    Py_CLEAR(self->last);
    return 0;
}

static void
boxer_dealloc(Boxer *self)
{
    PyObject_GC_UnTrack(self);
    boxer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject BoxerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hijaxc.runtime._speedups.Boxer",
    .tp_doc = "Boxer(cls)(aux, children) -> cls((aux,)): a pytree unflatten with no Python frame.",
    .tp_basicsize = sizeof(Boxer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = boxer_new,
    .tp_dealloc = (destructor)boxer_dealloc,
    .tp_traverse = (traverseproc)boxer_traverse,
    .tp_clear = (inquiry)boxer_clear,
    .tp_vectorcall_offset = offsetof(Boxer, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* ------------------------------------------------------------------------ module */

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
    .m_doc = "The steady-state call in C (see runtime/steady_state.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(name) \
    if ((str_##name = PyUnicode_InternFromString(#name)) == NULL) return NULL;
    INTERN(choose) INTERN(compiled) INTERN(jitted) INTERN(split_at) INTERN(pack) INTERN(apply) INTERN(fast_calls)
#undef INTERN
    if ((one = PyLong_FromLong(1)) == NULL
        || (str_gather = PyUnicode_InternFromString("_gather")) == NULL
        || (str_scatter = PyUnicode_InternFromString("_scatter")) == NULL
        || PyType_Ready(&FastCallType) < 0 || PyType_Ready(&BoxerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "FastCall", (PyObject *)&FastCallType) < 0
        || PyModule_AddObjectRef(m, "Boxer", (PyObject *)&BoxerType) < 0
        || hijaxc_add_dispatch(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
