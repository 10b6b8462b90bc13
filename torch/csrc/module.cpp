// The extension module kiln._C. Importing it runs the static TORCH_LIBRARY registrations of every
// family file (torch/csrc/<family>.cpp), which add the ops to torch.ops.kiln; the module itself
// only carries `last_receipt()`. Plain CPython API: the ops need no pybind11.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <torch/library.h>

#include "kiln/core/receipt.h"

// Claims the namespace; each family adds its ops with TORCH_LIBRARY_FRAGMENT(kiln, m).
TORCH_LIBRARY(kiln, m) {
  (void)m;
}

namespace {

// last_receipt() -> {"op", "backend", "variant", "note"}: what this thread's latest kiln call ran.
PyObject* last_receipt(PyObject* /*self*/, PyObject* /*args*/) {
  const kiln::Receipt& r = kiln::last_receipt();
  return Py_BuildValue("{s:s#,s:s#,s:s#,s:s#}", "op", r.op.data(), Py_ssize_t(r.op.size()),
                       "backend", r.backend.data(), Py_ssize_t(r.backend.size()), "variant",
                       r.variant.data(), Py_ssize_t(r.variant.size()), "note", r.note.data(),
                       Py_ssize_t(r.note.size()));
}

PyMethodDef methods[] = {
    {"last_receipt", last_receipt, METH_NOARGS,
     "last_receipt() -> dict: op, backend, variant and note of this thread's latest kiln call."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "kiln's compiled ops (registered into torch.ops.kiln).",
    -1,
    methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__C() {
  return PyModule_Create(&module);
}
