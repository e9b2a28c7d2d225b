# bench/common/bad_args.cmake — synk_bad_arg_test(), the bad-argument sweep
# of the benchmark programs: one CTest test per flag and bad value, checked
# by check_bad_arg.cmake (non-zero exit, one stderr line naming the flag,
# no stdout output, no --json file written).
#
#   synk_bad_arg_test(synk-mnist --epochs 0)                # the program, the flag, its value
#   synk_bad_arg_test(synk-mnist --tf32 "" --device cpu)    # a flag without a value, more arguments
#   synk_bad_arg_test(synk-collectives --pin=maybe "")      # checks that stderr names --pin
#
# Unless the flag under test is --json, the program also gets --json <file>
# so that the test can check no results were written.
include_guard(GLOBAL)

function(synk_bad_arg_test prog flag value)
  set(args ${flag})
  if(NOT value STREQUAL "")
    list(APPEND args "${value}")
  endif()
  list(APPEND args ${ARGN})
  string(MAKE_C_IDENTIFIER "${flag}_${value}_${ARGN}" id)
  string(REGEX REPLACE "_+" "_" id "${id}")
  string(REGEX REPLACE "^_|_$" "" id "${id}")
  set(name "${prog}_bad_arg.${id}")
  set(json "")
  if(NOT flag STREQUAL "--json")
    set(json "${CMAKE_CURRENT_BINARY_DIR}/bad_arg_${id}.json")
    list(APPEND args --json "${json}")
  endif()
  string(REGEX REPLACE "=.*" "" flag_name "${flag}")
  add_test(NAME "${name}"
           COMMAND ${CMAKE_COMMAND} -DFLAG=${flag_name} -DJSON=${json} -P ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/check_bad_arg.cmake
                   -- $<TARGET_FILE:${prog}> ${args})
  set_tests_properties("${name}" PROPERTIES LABELS bad_args TIMEOUT 90)
endfunction()
