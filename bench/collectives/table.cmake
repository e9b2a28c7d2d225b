# bench/collectives/table.cmake — synk_collective_table, the collective
# table (table.hpp: every .cpp of this folder but main.cpp, one per
# collective, and the harness) as an object library: synk-collectives and
# the conformance tests (tests/) link it, so every entry's self-registration
# is kept. Included by both; defined once.
include_guard(GLOBAL)
file(GLOB synk_collective_table_sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/*.cpp)
list(REMOVE_ITEM synk_collective_table_sources ${CMAKE_CURRENT_LIST_DIR}/main.cpp)
add_library(synk_collective_table OBJECT ${synk_collective_table_sources})
# Uses the comm interface (src/comm/comm.hpp), private to libsynk.
target_include_directories(synk_collective_table PUBLIC ${PROJECT_SOURCE_DIR}/src ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(synk_collective_table PUBLIC synk::synk)
