// Test tool: runs the engine on token sequences and writes what the Python reference checks need.
//   qgate_logits_tool MODEL OUT_DIR GREEDY_TOKENS [reference] < prompts
// Each stdin line is a space-separated token sequence i. For each, writes OUT_DIR/logits_i.f32
// (float32 [n][vocab], logits of every position, fresh KV cache) and OUT_DIR/greedy_i.txt (the
// greedy continuation of GREEDY_TOKENS tokens, EOS ignored). With `reference`, matmuls run in
// the verification mode (ForwardScratch::reference_matmul).
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/model_loader.h"
#include "kernels/cpu/thread_pool.h"

int main(int argc, char** argv) {
  using namespace qgate;
  if (argc != 4 && argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL OUT_DIR GREEDY_TOKENS [reference] < prompts\n", argv[0]);
    return 2;
  }
  auto loaded = load_model(argv[1]);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.error().to_string().c_str());
    return 1;
  }
  const std::string out_dir = argv[2];
  const int64_t greedy_tokens = std::stoll(argv[3]);
  const bool reference = argc == 5 && std::string(argv[4]) == "reference";
  const LlamaModel& model = *loaded->model;
  const auto vocab = static_cast<size_t>(model.config().vocab_size);
  ThreadPool pool(2);
  std::string line;
  for (int i = 0; std::getline(std::cin, line); ++i) {
    std::vector<int32_t> ids;
    std::istringstream in(line);
    for (int32_t id; in >> id;) ids.push_back(id);
    KvCache cache(model.config(), 4096);
    ForwardScratch scratch;
    scratch.reference_matmul = reference;
    std::vector<float> logits(ids.size() * vocab);
    if (Status st = model.forward(ids, cache, scratch, pool, LogitsMode::kAll, logits); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.error().to_string().c_str());
      return 1;
    }
    std::ofstream(out_dir + "/logits_" + std::to_string(i) + ".f32", std::ios::binary)
        .write(reinterpret_cast<const char*>(logits.data()),
               static_cast<std::streamsize>(logits.size() * sizeof(float)));
    std::ofstream greedy(out_dir + "/greedy_" + std::to_string(i) + ".txt");
    const float* last = logits.data() + (ids.size() - 1) * vocab;
    for (int64_t g = 0; g < greedy_tokens; ++g) {
      const auto next = static_cast<int32_t>(std::max_element(last, last + vocab) - last);
      greedy << next << ' ';
      const int32_t in_tok[1] = {next};
      if (!model.forward(in_tok, cache, scratch, pool, LogitsMode::kLast, logits).ok()) return 1;
      last = logits.data();
    }
  }
  return 0;
}
