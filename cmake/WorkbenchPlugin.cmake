# workbench_add_plugin(NAME <name> SOURCES <files...> [LIBRARIES <libs...>])
# Builds one plugin = one shared library named workbench_<name>.so. In the source tree it lands in
# the build's plugins/ folder and reuses the host's precompiled LibTorch headers; out of tree it
# links against the installed SDK (target workbench::sdk). Either way a plugin links the SDK
# library and nothing else of the workbench, and sees only the SDK headers.
function(workbench_add_plugin)
  cmake_parse_arguments(P "" "NAME" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT P_NAME OR NOT P_SOURCES)
    message(FATAL_ERROR "workbench_add_plugin needs NAME and SOURCES")
  endif()
  set(target workbench_${P_NAME})
  add_library(${target} MODULE ${P_SOURCES})
  set_target_properties(${target} PROPERTIES PREFIX "" CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(TARGET workbench_sdk)  # in the workbench source tree
    target_link_libraries(${target} PRIVATE workbench_sdk ${P_LIBRARIES})
    target_compile_options(${target} PRIVATE ${WORKBENCH_WARNING_FLAGS})
    set_target_properties(${target} PROPERTIES
      LIBRARY_OUTPUT_DIRECTORY ${WORKBENCH_PLUGIN_OUTPUT_DIR}
      INSTALL_RPATH "$ORIGIN/../..")
    workbench_use_pch(${target})
    install(TARGETS ${target} LIBRARY DESTINATION ${WORKBENCH_INSTALL_PLUGINDIR})
    if(TARGET workbench_main)
      add_dependencies(workbench_main ${target})
    endif()
  else()
    target_link_libraries(${target} PRIVATE workbench::sdk ${P_LIBRARIES})
  endif()
endfunction()
