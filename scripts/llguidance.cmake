# scripts/setup passes this file as CMAKE_PROJECT_INCLUDE when it builds llama-server with
# llguidance. It runs after each project() of the llama.cpp tree; at the end of the top-level
# directory, when the targets exist, it compiles llama.cpp's llguidance sampler into
# llama-common and links it against the llguidance library Impetus already installs (the
# llguidance wheel's extension exports the C API; it refers to libpython, which is linked too),
# in place of llama.cpp's own route (a cargo build from git, impossible offline).
# Inputs: IMPETUS_LLGUIDANCE_DIR (libllguidance.so and llguidance.h), IMPETUS_PYTHON_LIBRARY.
if(PROJECT_NAME STREQUAL "llama.cpp" AND NOT _IMPETUS_LLGUIDANCE)
  set(_IMPETUS_LLGUIDANCE 1)
  function(_impetus_llguidance)
    target_compile_definitions(llama-common PUBLIC LLAMA_USE_LLGUIDANCE)
    target_include_directories(llama-common PRIVATE "${IMPETUS_LLGUIDANCE_DIR}")
    target_link_libraries(llama-common PUBLIC "${IMPETUS_LLGUIDANCE_DIR}/libllguidance.so" "${IMPETUS_PYTHON_LIBRARY}")
    # the library is installed beside the binary
    set_target_properties(llama-server PROPERTIES BUILD_RPATH "\$ORIGIN")
  endfunction()
  cmake_language(DEFER CALL _impetus_llguidance)
endif()
