// autonl_main.h: the main() of autonl_runner and autonl_rpc_server. An exception becomes
// one "error: ..." line on stderr (a TVM error: its kind and first line) and exit code 1.
#pragma once

#include <tvm/ffi/error.h>

#include <exception>
#include <iostream>
#include <sstream>
#include <string>

namespace autonl {

inline std::string ErrorLine(const tvm::ffi::Error& e) {
  std::ostringstream s;
  std::string msg = e.message();
  s << e.kind() << ": " << msg.substr(0, msg.find('\n'));
  return s.str();
}

template <typename Run>
int GuardedMain(Run run, int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tvm::ffi::Error& e) {
    std::cerr << "error: " << ErrorLine(e) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace autonl
