/* llama.cpp's tokenizer as a small shared library (built by scripts/setup with llama-server,
 * from the same sources: scripts/llama_extras.cmake). The llama.cpp plugin's worker loads it
 * with ctypes (plugins/llamacpp/impetus_llamacpp/vocab.py) and tokenizes prompts in-process,
 * exactly as llama-server's /tokenize would, without a round trip to it. */
#include <stdbool.h>
#include <stdint.h>

#include "llama.h"

#define EXPORT __attribute__((visibility("default")))

static void quiet(enum ggml_log_level level, const char * text, void * user_data) {
    (void) level;
    (void) text;
    (void) user_data;
}

/* The model's vocabulary only (no weights), or NULL when the file cannot be read as a model. */
EXPORT void * impetus_vocab_open(const char * path) {
    llama_log_set(quiet, NULL);
    struct llama_model_params params = llama_model_default_params();
    params.vocab_only = true;
    params.n_gpu_layers = 0;
    return llama_model_load_from_file(path, params);
}

/* llama_tokenize: the token count, or minus the count needed when n_max is too small. */
EXPORT int32_t impetus_vocab_tokenize(void * model, const char * text, int32_t len, int32_t * out, int32_t n_max, bool add_special, bool parse_special) {
    return llama_tokenize(llama_model_get_vocab(model), text, len, out, n_max, add_special, parse_special);
}

EXPORT void impetus_vocab_close(void * model) {
    llama_model_free(model);
}
