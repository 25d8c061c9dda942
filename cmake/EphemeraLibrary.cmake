# ephemera_library(NAME SOURCES... DEPS ...): one static library per part,
# headers included as "part/header.h" from src/.
function(ephemera_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(ephemera_${name} STATIC ${ARG_SOURCES})
  add_library(ephemera::${name} ALIAS ephemera_${name})
  target_include_directories(ephemera_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(ephemera_${name} PUBLIC ${ARG_DEPS})
endfunction()
