// Test tool: exports a model (GGUF file or HF directory) as an FP16 HF directory, the way
// `qgate quantize --method fp16` does, so tests/python/test_fp16_export.py can check the result
// with the Python ecosystem's readers.
//   qgate_export_tool SRC OUT_DIR [--overwrite]
// Exit status 0 on success; otherwise the error on stderr and status 1 (2 for bad usage).
#include <cstdio>
#include <string>

#include "engine/hf_export.h"

int main(int argc, char** argv) {
  using namespace qgate;
  const bool overwrite = argc == 4 && std::string(argv[3]) == "--overwrite";
  if (argc != 3 && !overwrite) {
    std::fprintf(stderr, "usage: %s SRC OUT_DIR [--overwrite]\n", argv[0]);
    return 2;
  }
  HfExportOptions options;
  options.overwrite = overwrite;
  Status st = export_hf_fp16(argv[1], argv[2], options);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.error().to_string().c_str());
    return 1;
  }
  return 0;
}
