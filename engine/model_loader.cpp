#include "engine/model_loader.h"

#include <simdjson.h>

#include <filesystem>

#include "engine/gguf.h"
#include "engine/hf_loader.h"

namespace qgate {

namespace {

ChatTemplate template_or_chatml(const std::string& source) {
  if (source.empty()) return ChatTemplate::chatml();
  auto t = ChatTemplate::from_source(source);
  return t.ok() ? t.value() : ChatTemplate::chatml();
}

// tokenizer_config.json carries the chat template of HF checkpoints (or chat_template.jinja).
std::string hf_chat_template_source(const std::string& dir) {
  if (auto jinja = read_text_file(dir + "/chat_template.jinja"); jinja.ok()) return jinja.value();
  auto text = read_text_file(dir + "/tokenizer_config.json");
  if (!text.ok()) return {};
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text.value());
  std::string_view tmpl;
  if (parser.parse(padded)["chat_template"].get_string().get(tmpl) != simdjson::SUCCESS) return {};
  return std::string(tmpl);
}

}  // namespace

Result<LoadedModel> load_model(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LoadedModel out;
  out.path = path;
  if (fs::is_directory(path, ec)) {
    QGATE_ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::from_hf_dir(path));
    QGATE_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_hf_json_file(path + "/tokenizer.json"));
    out.model = std::make_shared<const LlamaModel>(std::move(model));
    out.tokenizer = std::make_shared<const Tokenizer>(std::move(tok));
    out.chat_template = template_or_chatml(hf_chat_template_source(path));
    return out;
  }
  if (!fs::exists(path, ec)) {
    return make_error(ErrorCode::kNotFound, path + ": no such file or directory");
  }
  QGATE_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(path));
  auto shared = std::make_shared<const GgufFile>(std::move(gguf));
  QGATE_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_gguf(*shared));
  QGATE_ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::from_gguf(shared));
  out.chat_template = template_or_chatml(tok.chat_template_source());
  out.model = std::make_shared<const LlamaModel>(std::move(model));
  out.tokenizer = std::make_shared<const Tokenizer>(std::move(tok));
  return out;
}

}  // namespace qgate
