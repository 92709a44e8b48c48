// autonl_runner: run a model compiled by `autonl compile --backend tvm` with the TVM runtime.
//
//   autonl_runner MODEL.so MODEL.params INPUT.npy OUTPUT.npy [RUNS]
//
// Loads the library (a Relax VM executable), its parameters (tvm.runtime.save_param_dict,
// keys p0000, p0001, ... in call order), lays the weights out once when the library has
// main_transform_params (weight prepacking after tuning), reads a float32 C-order .npy
// input, runs `main` RUNS times (default 20) after one warm-up, writes the last output as
// float32 .npy and prints the median latency. Errors are one line on stderr, exit code 1.
//
// It uses only the TVM FFI headers (tvm_ffi/include) and links against libtvm_runtime.so and
// libtvm_ffi.so, so it cross-builds with g++-aarch64-linux-gnu against the runtime libraries
// of the aarch64 apache-tvm and apache-tvm-ffi wheels.
#include "autonl_main.h"

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int kDLCPUType = 1;
constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    // TVM's kernels assume 64-byte aligned buffers (kAllocAlignment); malloc gives 16.
    size_t bytes = (std::max<size_t>(ffi::GetDataSize(*t), 1) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, bytes);
    if (t->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

ffi::Tensor EmptyF32(const std::vector<int64_t>& shape) {
  DLDataType f32{kDLFloat, 32, 1};
  DLDevice cpu{kDLCPU, 0};
  return ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape.begin(), shape.end()), f32, cpu);
}

// A float32, C-order .npy file (format versions 1 to 3).
ffi::Tensor ReadNpy(const std::string& path) {
  std::string raw = ReadFile(path);
  if (raw.size() < 10 || raw.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + ": not a .npy file");
  int major = static_cast<unsigned char>(raw[6]);
  size_t hlen, start;
  if (major == 1) {
    hlen = static_cast<unsigned char>(raw[8]) | (static_cast<unsigned char>(raw[9]) << 8);
    start = 10;
  } else {
    if (raw.size() < 12) throw std::runtime_error(path + ": truncated .npy header");
    hlen = 0;
    for (int i = 3; i >= 0; --i) hlen = (hlen << 8) | static_cast<unsigned char>(raw[8 + i]);
    start = 12;
  }
  if (start + hlen > raw.size()) throw std::runtime_error(path + ": truncated .npy header");
  std::string header = raw.substr(start, hlen);
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw std::runtime_error(path + ": expected float32 ('<f4') data, header " + header);
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": expected C order");
  size_t lp = header.find('('), rp = header.find(')');
  if (lp == std::string::npos || rp == std::string::npos) throw std::runtime_error(path + ": no shape in header");
  std::vector<int64_t> shape;
  std::stringstream dims(header.substr(lp + 1, rp - lp - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    shape.push_back(std::stoll(item));
  }
  ffi::Tensor t = EmptyF32(shape);
  size_t nbytes = static_cast<size_t>(t.numel()) * sizeof(float);
  if (raw.size() - start - hlen != nbytes)
    throw std::runtime_error(path + ": data size does not match its shape");
  std::memcpy(t.data_ptr(), raw.data() + start + hlen, nbytes);
  return t;
}

void WriteNpy(const std::string& path, const ffi::Tensor& t) {
  if (t.dtype().code != kDLFloat || t.dtype().bits != 32) throw std::runtime_error("output is not float32");
  std::string shape;
  for (int64_t d : t.shape()) shape += std::to_string(d) + ", ";
  if (t.ndim() > 1) shape.resize(shape.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error(path + ": cannot write");
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t hlen = static_cast<uint16_t>(header.size());
    char lh[2] = {static_cast<char>(hlen & 0xff), static_cast<char>(hlen >> 8)};
    f.write(lh, 2);
    f << header;
    f.write(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * sizeof(float));
    if (!f) throw std::runtime_error(path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": rename failed");
}

int Run(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    std::cerr << "usage: " << argv[0] << " MODEL.so MODEL.params INPUT.npy OUTPUT.npy [RUNS]\n";
    return 2;
  }
  int runs = argc == 6 ? std::atoi(argv[5]) : 20;
  if (runs < 1) throw std::runtime_error("RUNS must be a positive integer");

  ffi::Module lib = ffi::Module::LoadFromFile(argv[1]);
  ffi::Optional<ffi::Function> load = lib->GetFunction("vm_load_executable");
  if (!load.has_value()) throw std::runtime_error(std::string(argv[1]) + ": not a Relax VM library");
  ffi::Module vm = (*load)().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(kDLCPUType, 0, kPooledAllocator);

  ffi::Function load_params = ffi::Function::GetGlobalRequired("runtime.LoadParams");
  std::string blob = ReadFile(argv[2]);
  auto named = load_params(ffi::Bytes(blob.data(), blob.size())).cast<ffi::Map<ffi::String, ffi::Tensor>>();
  std::vector<std::string> keys;
  for (const auto& kv : named) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  ffi::Array<ffi::Any> params;
  for (const auto& k : keys) params.push_back(named.at(k));
  if (ffi::Optional<ffi::Function> transform = vm->GetFunction("main_transform_params")) {
    params = (*transform)(params).cast<ffi::Array<ffi::Any>>();
  }

  ffi::Tensor input = ReadNpy(argv[3]);
  ffi::Function main_fn = vm->GetFunction("main").value();
  std::vector<ffi::Any> owned;  // the views below point into these (Array iterates by value)
  owned.push_back(input);
  for (size_t i = 0; i < params.size(); ++i) owned.push_back(params[i]);
  std::vector<ffi::AnyView> args(owned.begin(), owned.end());
  ffi::Any out;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &out);  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &out);
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  WriteNpy(argv[4], out.cast<ffi::Tensor>());
  std::printf("runs %d median_ms %.4f min_ms %.4f\n", runs, ms[ms.size() / 2], ms.front());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return autonl::GuardedMain(Run, argc, argv); }
