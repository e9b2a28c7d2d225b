# tests/package/run.cmake — CTest driver for package.find_package: installs
# the synk build tree to a scratch prefix, then configures, builds and runs
# the consumer project beside this file against that prefix only, the way an
# outside project would use an installed synk.
#
# Inputs (-D): SYNK_BUILD_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, GENERATOR,
# BUILD_TYPE, CXX_COMPILER, SANITIZE. With STATIC_FROM_SOURCE=<synk source
# dir> it first builds libsynk as a static library (CPU only, library only)
# in WORK_DIR and installs that instead of SYNK_BUILD_DIR, so the static
# package's exported link dependencies are checked too.
if(STATIC_FROM_SOURCE)
  set(SYNK_BUILD_DIR ${WORK_DIR}/synk-static)
endif()
foreach(v SYNK_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR)
  if(NOT ${v})
    message(FATAL_ERROR "run.cmake: ${v} is not set")
  endif()
endforeach()
if(NOT BUILD_TYPE)
  set(BUILD_TYPE Release)
endif()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package test: ${what} failed (${rc}): ${ARGN}")
  endif()
endfunction()

if(STATIC_FROM_SOURCE)
  step("configure static synk" ${CMAKE_COMMAND} -S ${STATIC_FROM_SOURCE} -B ${SYNK_BUILD_DIR}
       -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
       -DBUILD_SHARED_LIBS=OFF -DSYNK_WITH_CUDA=OFF -DSYNK_BUILD_TESTS=OFF
       -DSYNK_BUILD_BENCH=OFF -DSYNK_BUILD_EXAMPLES=OFF)
  step("build static synk" ${CMAKE_COMMAND} --build ${SYNK_BUILD_DIR} --config ${BUILD_TYPE} --parallel 2)
  if(NOT EXISTS ${SYNK_BUILD_DIR}/lib/libsynk.a)
    message(FATAL_ERROR "package test: the static build made no lib/libsynk.a")
  endif()
endif()

step("install" ${CMAKE_COMMAND} --install ${SYNK_BUILD_DIR} --prefix ${prefix}
     --config ${BUILD_TYPE})

set(extra)
if(SANITIZE)
  # A sanitized libsynk needs the sanitizer runtime first in the consumer.
  set(flags "-fsanitize=${SANITIZE}")
  if(SANITIZE MATCHES address)
    string(APPEND flags " -fsanitize=undefined")
  endif()
  list(APPEND extra "-DCMAKE_CXX_FLAGS=${flags}")
endif()
# The consumer must find the installed package, not the build tree (package
# registry off) nor another install (checked through synk_DIR below).
step("configure" ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build}
     -G ${GENERATOR} -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
     -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
     -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
     ${extra})
file(STRINGS ${build}/CMakeCache.txt found REGEX "^synk_DIR:")
string(FIND "${found}" "${prefix}/" at)
if(NOT at GREATER -1)
  message(FATAL_ERROR "package test: synk was not found in ${prefix}: ${found}")
endif()
step("build" ${CMAKE_COMMAND} --build ${build} --config ${BUILD_TYPE} --parallel 1)
step("run" ${build}/synk_consumer)
message(STATUS "package test: find_package(synk) from ${prefix} works")
