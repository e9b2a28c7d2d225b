# Decides whether the CUDA parts are built (SYNK_WITH_CUDA = AUTO|ON|OFF).
# They compile wherever the toolkit is installed, GPU or not, so CI builds
# them every run. Sets SYNK_HAVE_CUDA and SYNK_HAVE_NCCL.
set(SYNK_HAVE_CUDA OFF)
set(SYNK_HAVE_NCCL OFF)
if(SYNK_CUDA_EMU)
  # The CUDA emulation for tests (tests/cuda_emu, docs/testing.md): the CUDA
  # parts compile with the C++ compiler against the real CUDA headers and
  # link an emulated CUDA runtime, cuBLAS and NCCL that run on the CPU. No
  # nvcc, driver or GPU needed; never what users link.
  find_path(SYNK_CUDA_EMU_INCLUDE cuda_runtime_api.h
            HINTS ${CUDAToolkit_ROOT} ENV CUDA_HOME PATH_SUFFIXES include PATHS /usr/local/cuda)
  find_path(SYNK_CUDA_EMU_NCCL_INCLUDE nccl.h
            HINTS ${NCCL_ROOT} ${SYNK_CUDA_EMU_INCLUDE} PATH_SUFFIXES include PATHS /usr/local/cuda)
  if(NOT SYNK_CUDA_EMU_INCLUDE OR NOT SYNK_CUDA_EMU_NCCL_INCLUDE)
    message(FATAL_ERROR "SYNK_CUDA_EMU=ON needs the CUDA headers (cuda_runtime_api.h, cublas_v2.h) and nccl.h: "
                        "set CUDAToolkit_ROOT / NCCL_ROOT")
  endif()
  set(SYNK_HAVE_CUDA ON)
  set(SYNK_HAVE_NCCL ON)
elseif(NOT SYNK_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Explicit list: Ampere, Hopper (H100/H200).
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    # CMake 3.25 (Debian 12) knows no C++20 flag for nvcc although nvcc >= 12
    # accepts -std=c++20; supply it so CUDA_STANDARD 20 works there too.
    if(NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION
       AND CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA"
       AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(SYNK_HAVE_CUDA ON)
    find_package(NCCL)
    if(NCCL_FOUND)
      set(SYNK_HAVE_NCCL ON)
    endif()
  elseif(SYNK_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "SYNK_WITH_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "synk: CUDA ${SYNK_HAVE_CUDA}, NCCL ${SYNK_HAVE_NCCL}")
