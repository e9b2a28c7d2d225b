# tests/static/include_cycles.cmake — fails if the folders of the library
# include each other in a cycle (ctest: static.include_cycles).
#
#   cmake -DSOURCE_DIR=<repo> -P tests/static/include_cycles.cmake
#
# Each folder of src/ is a layer of its own (exec, exec/cuda, exec/cpu and
# exec/plan are four), and so is kernels/. A folder may include the
# headers of the folders below it, never one that includes it back,
# directly or through others: src/cuda (the CUDA device layer) includes
# nothing of exec/ or comm/, comm/ and exec/cuda include src/cuda, and so
# on (docs/architecture.md). Every `#include "..."` counts, whatever #if it
# sits under; it resolves as the compiler does: next to the including file
# first, then in src/, then in kernels/ (the library's private include
# directories). Public headers (include/synk) and system headers are no
# folder of the library.
cmake_minimum_required(VERSION 3.20)
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "usage: cmake -DSOURCE_DIR=<repo> -P include_cycles.cmake")
endif()
set(roots "${SOURCE_DIR}/src" "${SOURCE_DIR}/kernels")

# The folder a file belongs to: its directory under src/, or "kernels".
function(folder_of file out)
  get_filename_component(dir "${file}" DIRECTORY)
  file(RELATIVE_PATH rel "${SOURCE_DIR}/src" "${dir}")
  if(rel MATCHES "^\\.\\.")
    file(RELATIVE_PATH rel "${SOURCE_DIR}" "${dir}")
  endif()
  if(rel STREQUAL "")
    set(rel "src")
  endif()
  set(${out} "${rel}" PARENT_SCOPE)
endfunction()

set(files "")
foreach(root IN LISTS roots)
  file(GLOB_RECURSE globbed "${root}/*.hpp" "${root}/*.h" "${root}/*.cpp" "${root}/*.cu" "${root}/*.cuh")
  list(APPEND files ${globbed})
endforeach()

set(folders "")
foreach(f IN LISTS files)
  folder_of("${f}" from)
  list(APPEND folders "${from}")
  get_filename_component(dir "${f}" DIRECTORY)
  file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]+\"")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" inc "${line}")
    set(target "")
    foreach(base IN ITEMS "${dir}" ${roots})
      if(NOT target AND EXISTS "${base}/${inc}" AND NOT IS_DIRECTORY "${base}/${inc}")
        get_filename_component(target "${base}/${inc}" REALPATH)
      endif()
    endforeach()
    if(NOT target)
      continue()  # a public, generated or system header
    endif()
    folder_of("${target}" to)
    if(NOT to STREQUAL from AND NOT to MATCHES "^\\.\\.")
      if(NOT "${to}" IN_LIST edges_${from})
        list(APPEND edges_${from} "${to}")
        file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
        set("why_${from}__${to}" "${rel} includes \"${inc}\"")
      endif()
    endif()
  endforeach()
endforeach()
list(REMOVE_DUPLICATES folders)
list(SORT folders)

# For each folder, a breadth-first walk along its includes; reaching the
# folder again is a cycle, reported along the path that closes it.
set(cycles 0)
foreach(start IN LISTS folders)
  set(queue ${edges_${start}})
  set(seen ${queue})
  foreach(n IN LISTS queue)
    set("parent_${n}" "${start}")
  endforeach()
  set(found "")
  while(NOT "${queue}" STREQUAL "" AND NOT found)
    list(POP_FRONT queue n)
    if(n STREQUAL start)
      set(found 1)
      break()
    endif()
    foreach(m IN LISTS edges_${n})
      if(NOT m IN_LIST seen)
        list(APPEND seen "${m}")
        list(APPEND queue "${m}")
        set("parent_${m}" "${n}")
      endif()
    endforeach()
  endwhile()
  if(found)
    math(EXPR cycles "${cycles} + 1")
    # Walk back from start to start: the cycle's edges in reverse.
    set(path "")
    set(n "${start}")
    while(TRUE)
      set(p "${parent_${n}}")
      list(PREPEND path "  ${p} -> ${n}: ${why_${p}__${n}}")
      set(n "${p}")
      if(n STREQUAL start)
        break()
      endif()
    endwhile()
    list(JOIN path "\n" text)
    message("include cycle through ${start}:\n${text}")
  endif()
  foreach(n IN LISTS seen)
    unset("parent_${n}")
  endforeach()
endforeach()

if(cycles GREATER 0)
  message(FATAL_ERROR "${cycles} folder(s) of src/ and kernels/ sit on an include cycle (see above)")
endif()
list(LENGTH folders nf)
message(STATUS "no include cycle between the ${nf} folders of src/ and kernels/")
