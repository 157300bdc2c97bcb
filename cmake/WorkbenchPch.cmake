# workbench_use_pch(<target>): the target reuses the shared precompiled LibTorch header, but only
# in its sources that include LibTorch or workbench headers; loading the large PCH would make
# the other (torch-free) sources slower to compile, not faster. The internal headers named in the
# last alternative (moe/, train/, ...) live in core/src or core/sdk/src.
set(WORKBENCH_TORCH_INCLUDE_REGEX
  "#include [<\"](torch|ATen|c10)/|#include \"workbench/(gate|backbone|loss|moe_layer|routing|batch|geometry|matcher|evaluator|comm|eval_tools|layers|balance)\\.h\"|#include \"(moe|train|data|dist|eval)/")
function(workbench_use_pch target)
  if(NOT WORKBENCH_USE_PCH)
    return()
  endif()
  target_precompile_headers(${target} REUSE_FROM workbench_pch)
  get_target_property(sources ${target} SOURCES)
  get_target_property(source_dir ${target} SOURCE_DIR)
  foreach(src ${sources})
    if(NOT IS_ABSOLUTE ${src})
      set(src ${source_dir}/${src})
    endif()
    if(NOT src MATCHES "\\.(cpp|cc|cxx)$")
      continue()
    endif()
    file(STRINGS ${src} torch_lines REGEX "${WORKBENCH_TORCH_INCLUDE_REGEX}")
    if(NOT torch_lines)
      set_source_files_properties(${src} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()
