// Makes the compiled library importable as cnnxfer._C (the ops register themselves when it loads).
// Left out of the CMake build: libtorch programs link the library directly, without Python.
#include <Python.h>

#ifndef CNNXFER_TORCH_VERSION
#define CNNXFER_TORCH_VERSION "unknown"
#endif

static PyModuleDef cnnxfer_module = {PyModuleDef_HEAD_INIT, "_C",
                                     "cnnxfer's compiled ops (registered in torch.ops.cnnxfer)",
                                     -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&cnnxfer_module);
  if (module == nullptr) return nullptr;
  // The torch this library was compiled against: a different one at run time means a rebuild.
  if (PyModule_AddStringConstant(module, "torch_version", CNNXFER_TORCH_VERSION) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  // Whether the CUDA kernels are in this build: the Python faces' backend choice reads it (a
  // constant, so torch.compile traces the choice; no dispatcher query needed).
#ifdef CNNXFER_WITH_CUDA
  const long cuda_kernels = 1;
#else
  const long cuda_kernels = 0;
#endif
  if (PyModule_AddIntConstant(module, "cuda_kernels", cuda_kernels) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
