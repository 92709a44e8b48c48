// autonl_rpc_server: a TVM RPC server for a board that has no Python, built from the TVM
// runtime library alone.
//
//   autonl_rpc_server [--host HOST] [--port PORT] [--key KEY]
//
// It speaks the protocol of `python -m tvm.exec.rpc_server` (tvm/rpc/server.py): accept a
// connection, check the client's magic number and key, answer with the server's key, then
// hand the socket to the runtime's `rpc.ServerLoop` in a child process that works in a fresh
// folder and is gone when the session ends (a kernel that crashes takes only its session
// down). One session at a time, as the Python server. What the Python server registers in
// Python is registered here: `tvm.rpc.server.workpath` (where uploads land),
// `tvm.rpc.server.load_module` (a shared library uploaded there) and
// `tvm.contrib.random.random_fill` and `random_fill_for_measure` (MetaSchedule's RPC runner
// fills its arguments with them; the runtime wheels are built without them). A client's `-timeout=S` option ends a session
// after S seconds. It prints "listening on HOST:PORT" once it accepts connections; SIGINT or
// SIGTERM stops it and its session.
//
// Built like autonl_runner (Makefile): TVM FFI headers, libtvm_runtime.so and libtvm_ffi.so.
#include "autonl_main.h"

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int32_t kRPCMagic = 0xff271;  // tvm/rpc/base.py RPC_MAGIC
constexpr int32_t kRPCSuccess = kRPCMagic + 0;
constexpr int32_t kRPCMismatch = kRPCMagic + 2;

volatile sig_atomic_t g_stop = 0;
volatile pid_t g_child = 0;

void OnSignal(int) {
  g_stop = 1;
  if (g_child > 0) kill(g_child, SIGKILL);
}

bool RecvAll(int fd, void* buf, size_t n) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool SendAll(int fd, const void* buf, size_t n) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool SendInt(int fd, int32_t v) { return SendAll(fd, &v, 4); }  // little-endian hosts only

// The handshake of tvm/rpc/server.py; the session's timeout in seconds (0: none), or -1 when
// the connection is not a matching client.
int Handshake(int fd, const std::string& key) {
  int32_t magic = 0, keylen = 0;
  if (!RecvAll(fd, &magic, 4) || magic != kRPCMagic) return -1;
  if (!RecvAll(fd, &keylen, 4) || keylen < 0 || keylen > 4096) return -1;
  std::string text(static_cast<size_t>(keylen), '\0');
  if (!RecvAll(fd, text.data(), text.size())) return -1;
  std::istringstream words(text);
  std::string head, word;
  words >> head;
  if (head != "client:" + key) {
    SendInt(fd, kRPCMismatch);
    return -1;
  }
  int timeout = 0;
  while (words >> word) {
    if (word.rfind("-timeout=", 0) == 0) timeout = std::max(0, static_cast<int>(std::atof(word.c_str() + 9) + 0.999));
  }
  std::string server_key = "server:" + key;
  if (!SendInt(fd, kRPCSuccess) || !SendInt(fd, static_cast<int32_t>(server_key.size())) ||
      !SendAll(fd, server_key.data(), server_key.size()))
    return -1;
  return timeout;
}

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) { return remove(path); }

void FillRandom(DLTensor* t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  char* base = static_cast<char*>(t->data) + t->byte_offset;
  std::mt19937 gen(42);
  if (t->dtype.code == kDLFloat && t->dtype.bits == 32) {
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    float* p = reinterpret_cast<float*>(base);
    for (int64_t i = 0; i < n; ++i) p[i] = u(gen);
  } else if (t->dtype.code == kDLFloat && t->dtype.bits == 64) {
    std::uniform_real_distribution<double> u(-1., 1.);
    double* p = reinterpret_cast<double*>(base);
    for (int64_t i = 0; i < n; ++i) p[i] = u(gen);
  } else {  // integers (indices, shapes): zero is in range for any of them
    std::memset(base, 0, static_cast<size_t>(n) * ((t->dtype.bits * t->dtype.lanes + 7) / 8));
  }
}

// In the session's child: register the server's functions, serve until the client leaves.
[[noreturn]] void Serve(int fd, int timeout) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (timeout > 0) alarm(static_cast<unsigned>(timeout));
  char dir_template[] = "/tmp/autonl-rpc-XXXXXX";
  char* dir = mkdtemp(dir_template);
  if (dir == nullptr || chdir(dir) != 0) {
    std::cerr << "error: cannot make a work folder in /tmp\n";
    _exit(1);
  }
  std::string work = dir;
  int code = 0;
  try {
    ffi::Function::SetGlobal("tvm.rpc.server.workpath",
                             ffi::Function::FromTyped([work](ffi::String path) -> ffi::String {
                               return ffi::String(work + "/" + std::string(path));
                             }),
                             true);
    ffi::Function::SetGlobal("tvm.rpc.server.load_module",
                             ffi::Function::FromTyped([work](ffi::String file) -> ffi::Module {
                               return ffi::Module::LoadFromFile(work + "/" + std::string(file));
                             }),
                             true);
    for (const char* name : {"tvm.contrib.random.random_fill", "tvm.contrib.random.random_fill_for_measure"})
      ffi::Function::SetGlobal(name, ffi::Function::FromTyped([](DLTensor* t) { FillRandom(t); }), true);
    ffi::Function::GetGlobalRequired("rpc.ServerLoop")(fd);
  } catch (const ffi::Error& e) {
    std::cerr << "error: session: " << autonl::ErrorLine(e) << "\n";
    code = 1;
  }
  nftw(work.c_str(), RemoveEntry, 16, FTW_DEPTH | FTW_PHYS);
  _exit(code);
}

int Run(int argc, char** argv) {
  std::string host = "0.0.0.0", key;
  int port = 9090;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--host" || a == "--port" || a == "--key") && i + 1 < argc) {
      std::string v = argv[++i];
      if (a == "--host") host = v;
      else if (a == "--key") key = v;
      else port = std::atoi(v.c_str());
    } else {
      std::cerr << "usage: " << argv[0] << " [--host HOST] [--port PORT] [--key KEY]\n";
      return 2;
    }
  }
  if (port <= 0 || port > 65535) throw std::runtime_error("--port must be 1 to 65535");
  int lsock = socket(AF_INET, SOCK_STREAM, 0);
  if (lsock < 0) throw std::runtime_error("cannot open a socket");
  int one = 1;
  setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) throw std::runtime_error("--host " + host + ": not an IPv4 address");
  if (bind(lsock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(lsock, 8) != 0)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
  struct sigaction sa{};
  sa.sa_handler = OnSignal;  // no SA_RESTART: accept() and waitpid() return on a signal
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  while (!g_stop) {
    int conn = accept(lsock, nullptr, nullptr);
    if (conn < 0) continue;  // a signal, or a client that left
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int timeout = Handshake(conn, key);
    if (timeout < 0) {
      close(conn);
      continue;
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(lsock);
      Serve(conn, timeout);
    }
    close(conn);
    if (pid < 0) continue;
    g_child = pid;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    g_child = 0;
  }
  close(lsock);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return autonl::GuardedMain(Run, argc, argv); }
