# scripts/setup passes this file as CMAKE_PROJECT_INCLUDE when it builds llama-server. It runs
# after each project() of the llama.cpp tree; at the end of the top-level directory, when the
# targets exist, it adds what Impetus needs beyond llama.cpp's own build (no llama.cpp file is
# edited):
# - with IMPETUS_LLGUIDANCE_DIR (libllguidance.so and llguidance.h) and IMPETUS_PYTHON_LIBRARY:
#   llama.cpp's llguidance sampler, compiled into llama-common and linked against the llguidance
#   library Impetus already installs (the llguidance wheel's extension exports the C API; it
#   refers to libpython, which is linked too), in place of llama.cpp's own route (a cargo build
#   from git, impossible offline);
# - with IMPETUS_VOCAB_SOURCE: the target impetus-vocab, a shared library of llama.cpp's
#   tokenizer (a vocabulary-only model load and llama_tokenize), which the llama.cpp plugin
#   loads into its worker to tokenize prompts without a round trip to llama-server
#   (plugins/llamacpp/impetus_llamacpp/vocab.py). It needs the static libraries built as
#   position-independent code (CMAKE_POSITION_INDEPENDENT_CODE).
if(PROJECT_NAME STREQUAL "llama.cpp" AND NOT _IMPETUS_EXTRAS)
  set(_IMPETUS_EXTRAS 1)
  function(_impetus_extras)
    if(IMPETUS_LLGUIDANCE_DIR)
      target_compile_definitions(llama-common PUBLIC LLAMA_USE_LLGUIDANCE)
      target_include_directories(llama-common PRIVATE "${IMPETUS_LLGUIDANCE_DIR}")
      target_link_libraries(llama-common PUBLIC "${IMPETUS_LLGUIDANCE_DIR}/libllguidance.so" "${IMPETUS_PYTHON_LIBRARY}")
      # the library is installed beside the binary
      set_target_properties(llama-server PROPERTIES BUILD_RPATH "\$ORIGIN")
    endif()
    if(IMPETUS_VOCAB_SOURCE)
      add_library(impetus-vocab SHARED "${IMPETUS_VOCAB_SOURCE}")
      target_link_libraries(impetus-vocab PRIVATE llama)
    endif()
  endfunction()
  cmake_language(DEFER CALL _impetus_extras)
endif()
