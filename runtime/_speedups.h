/* What the parts of the _speedups extension give its module init (runtime/_speedups.c). */
#ifndef HIJAXC_SPEEDUPS_H
#define HIJAXC_SPEEDUPS_H
#include <Python.h>

/* runtime/_dispatch.c: adds Dispatch and configure to the module; 0, or -1 with an exception */
int hijaxc_add_dispatch(PyObject *module);

#endif
