// tests/cuda_emu/errors.cpp — cudaGetErrorName / cudaGetErrorString of the
// emulated CUDA runtime: every cudaError of CUDA 13's driver_types.h by its
// real name (stringised from the enum, so a misspelt name cannot compile);
// the descriptions are this emulation's own words.
#include <cuda_runtime_api.h>

namespace {

struct Entry {
  cudaError_t code;
  const char* name;
  const char* text;
};

#define X(code, text) {code, #code, text},
constexpr Entry kErrors[] = {
    X(cudaSuccess, "no error")
    X(cudaErrorInvalidValue, "invalid argument")
    X(cudaErrorMemoryAllocation, "out of memory")
    X(cudaErrorInitializationError, "initialization error")
    X(cudaErrorCudartUnloading, "driver shutting down")
    X(cudaErrorProfilerDisabled, "profiler disabled")
    X(cudaErrorProfilerNotInitialized, "profiler not initialized")
    X(cudaErrorProfilerAlreadyStarted, "profiler already started")
    X(cudaErrorProfilerAlreadyStopped, "profiler already stopped")
    X(cudaErrorInvalidConfiguration, "invalid configuration argument")
    X(cudaErrorInvalidPitchValue, "invalid pitch argument")
    X(cudaErrorInvalidSymbol, "invalid device symbol")
    X(cudaErrorInvalidHostPointer, "invalid host pointer")
    X(cudaErrorInvalidDevicePointer, "invalid device pointer")
    X(cudaErrorInvalidTexture, "invalid texture")
    X(cudaErrorInvalidTextureBinding, "invalid texture binding")
    X(cudaErrorInvalidChannelDescriptor, "invalid channel descriptor")
    X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")
    X(cudaErrorAddressOfConstant, "address of constant")
    X(cudaErrorTextureFetchFailed, "texture fetch failed")
    X(cudaErrorTextureNotBound, "texture not bound")
    X(cudaErrorSynchronizationError, "incorrect use of __syncthreads()")
    X(cudaErrorInvalidFilterSetting, "invalid filter setting")
    X(cudaErrorInvalidNormSetting, "invalid norm setting")
    X(cudaErrorMixedDeviceExecution, "mixed device execution")
    X(cudaErrorNotYetImplemented, "not yet implemented")
    X(cudaErrorMemoryValueTooLarge, "memory value too large")
    X(cudaErrorStubLibrary, "CUDA driver is a stub library")
    X(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version")
    X(cudaErrorCallRequiresNewerDriver, "API call is not supported in the installed CUDA driver")
    X(cudaErrorInvalidSurface, "invalid surface")
    X(cudaErrorDuplicateVariableName, "duplicate variable name")
    X(cudaErrorDuplicateTextureName, "duplicate texture name")
    X(cudaErrorDuplicateSurfaceName, "duplicate surface name")
    X(cudaErrorDevicesUnavailable, "CUDA-capable device(s) is/are busy or unavailable")
    X(cudaErrorIncompatibleDriverContext, "incompatible driver context")
    X(cudaErrorMissingConfiguration, "__global__ function call is not configured")
    X(cudaErrorPriorLaunchFailure, "prior launch failure")
    X(cudaErrorLaunchMaxDepthExceeded, "launch max depth exceeded")
    X(cudaErrorLaunchFileScopedTex, "launch file scoped tex")
    X(cudaErrorLaunchFileScopedSurf, "launch file scoped surf")
    X(cudaErrorSyncDepthExceeded, "sync depth exceeded")
    X(cudaErrorLaunchPendingCountExceeded, "launch pending count exceeded")
    X(cudaErrorInvalidDeviceFunction, "invalid device function")
    X(cudaErrorNoDevice, "no CUDA-capable device is detected")
    X(cudaErrorInvalidDevice, "invalid device ordinal")
    X(cudaErrorDeviceNotLicensed, "device not licensed")
    X(cudaErrorSoftwareValidityNotEstablished, "software validity not established")
    X(cudaErrorStartupFailure, "startup failure in cuda runtime")
    X(cudaErrorInvalidKernelImage, "invalid kernel image")
    X(cudaErrorDeviceUninitialized, "invalid device context")
    X(cudaErrorMapBufferObjectFailed, "map buffer object failed")
    X(cudaErrorUnmapBufferObjectFailed, "unmap buffer object failed")
    X(cudaErrorArrayIsMapped, "array is mapped")
    X(cudaErrorAlreadyMapped, "already mapped")
    X(cudaErrorNoKernelImageForDevice, "no kernel image is available for execution on the device")
    X(cudaErrorAlreadyAcquired, "already acquired")
    X(cudaErrorNotMapped, "not mapped")
    X(cudaErrorNotMappedAsArray, "not mapped as array")
    X(cudaErrorNotMappedAsPointer, "not mapped as pointer")
    X(cudaErrorECCUncorrectable, "uncorrectable ECC error encountered")
    X(cudaErrorUnsupportedLimit, "unsupported limit")
    X(cudaErrorDeviceAlreadyInUse, "device already in use")
    X(cudaErrorPeerAccessUnsupported, "peer access unsupported")
    X(cudaErrorInvalidPtx, "invalid ptx")
    X(cudaErrorInvalidGraphicsContext, "invalid graphics context")
    X(cudaErrorNvlinkUncorrectable, "nvlink uncorrectable")
    X(cudaErrorJitCompilerNotFound, "jit compiler not found")
    X(cudaErrorUnsupportedPtxVersion, "unsupported ptx version")
    X(cudaErrorJitCompilationDisabled, "jit compilation disabled")
    X(cudaErrorUnsupportedExecAffinity, "unsupported exec affinity")
    X(cudaErrorUnsupportedDevSideSync, "unsupported dev side sync")
    X(cudaErrorContained, "contained")
    X(cudaErrorInvalidSource, "invalid source")
    X(cudaErrorFileNotFound, "file not found")
    X(cudaErrorSharedObjectSymbolNotFound, "shared object symbol not found")
    X(cudaErrorSharedObjectInitFailed, "shared object init failed")
    X(cudaErrorOperatingSystem, "OS call failed or operation not supported on this OS")
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")
    X(cudaErrorIllegalState, "the operation cannot be performed in the present state")
    X(cudaErrorLossyQuery, "lossy query")
    X(cudaErrorSymbolNotFound, "symbol not found")
    X(cudaErrorNotReady, "device not ready")
    X(cudaErrorIllegalAddress, "an illegal memory access was encountered")
    X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")
    X(cudaErrorLaunchTimeout, "the launch timed out and was terminated")
    X(cudaErrorLaunchIncompatibleTexturing, "launch incompatible texturing")
    X(cudaErrorPeerAccessAlreadyEnabled, "peer access is already enabled")
    X(cudaErrorPeerAccessNotEnabled, "peer access has not been enabled")
    X(cudaErrorSetOnActiveProcess, "set on active process")
    X(cudaErrorContextIsDestroyed, "context is destroyed")
    X(cudaErrorAssert, "device-side assert triggered")
    X(cudaErrorTooManyPeers, "too many peers")
    X(cudaErrorHostMemoryAlreadyRegistered, "part or all of the requested memory range is already mapped")
    X(cudaErrorHostMemoryNotRegistered, "pointer does not correspond to a registered memory region")
    X(cudaErrorHardwareStackError, "hardware stack error")
    X(cudaErrorIllegalInstruction, "an illegal instruction was encountered")
    X(cudaErrorMisalignedAddress, "misaligned address")
    X(cudaErrorInvalidAddressSpace, "invalid address space")
    X(cudaErrorInvalidPc, "invalid pc")
    X(cudaErrorLaunchFailure, "unspecified launch failure")
    X(cudaErrorCooperativeLaunchTooLarge, "cooperative launch too large")
    X(cudaErrorTensorMemoryLeak, "tensor memory leak")
    X(cudaErrorNotPermitted, "operation not permitted")
    X(cudaErrorNotSupported, "operation not supported")
    X(cudaErrorSystemNotReady, "system not yet initialized")
    X(cudaErrorSystemDriverMismatch, "system has unsupported display driver / cuda driver combination")
    X(cudaErrorCompatNotSupportedOnDevice, "compat not supported on device")
    X(cudaErrorMpsConnectionFailed, "mps connection failed")
    X(cudaErrorMpsRpcFailure, "mps rpc failure")
    X(cudaErrorMpsServerNotReady, "mps server not ready")
    X(cudaErrorMpsMaxClientsReached, "mps max clients reached")
    X(cudaErrorMpsMaxConnectionsReached, "mps max connections reached")
    X(cudaErrorMpsClientTerminated, "mps client terminated")
    X(cudaErrorCdpNotSupported, "cdp not supported")
    X(cudaErrorCdpVersionMismatch, "cdp version mismatch")
    X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")
    X(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture")
    X(cudaErrorStreamCaptureMerge, "operation would result in a merge of separate capture sequences")
    X(cudaErrorStreamCaptureUnmatched, "capture was not ended in the same stream as it began")
    X(cudaErrorStreamCaptureUnjoined, "capturing stream has unjoined work")
    X(cudaErrorStreamCaptureIsolation, "dependency created on uncaptured work in another stream")
    X(cudaErrorStreamCaptureImplicit, "operation would make the legacy stream depend on a capturing blocking stream")
    X(cudaErrorCapturedEvent, "operation not permitted on an event last recorded in a capturing stream")
    X(cudaErrorStreamCaptureWrongThread, "attempt to terminate a thread-local capture sequence from another thread")
    X(cudaErrorTimeout, "wait operation timed out")
    X(cudaErrorGraphExecUpdateFailure, "graph exec update failure")
    X(cudaErrorExternalDevice, "external device")
    X(cudaErrorInvalidClusterSize, "invalid cluster size")
    X(cudaErrorFunctionNotLoaded, "function not loaded")
    X(cudaErrorInvalidResourceType, "invalid resource type")
    X(cudaErrorInvalidResourceConfiguration, "invalid resource configuration")
    X(cudaErrorUnknown, "unknown error")
};
#undef X

const Entry* find(cudaError_t e) {
  for (const Entry& x : kErrors)
    if (x.code == e) return &x;
  return nullptr;
}

}  // namespace

extern "C" {

const char* cudaGetErrorName(cudaError_t e) {
  const Entry* x = find(e);
  return x ? x->name : "unrecognized error code";
}

const char* cudaGetErrorString(cudaError_t e) {
  const Entry* x = find(e);
  return x ? x->text : "unrecognized error code";
}

}  // extern "C"
