// cluster.cpp: see cluster.h. Compiled with MOE_HAVE_MPI only when CMake found MPI.
#include "batch/cluster.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "util/error.h"

#ifdef MOE_HAVE_MPI
// The C API only: without these, mpi.h from C++ pulls in the deprecated C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace moe::batch {

namespace {

int launched_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::atoi(v);
  }
  return std::getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef MOE_HAVE_MPI
constexpr int kDataTag = 17;
constexpr size_t kChunk = size_t(16) << 20;  // bytes per message: far below MPI's int count limit
#endif

}  // namespace

bool Cluster::built_with_mpi() {
#ifdef MOE_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Cluster> Cluster::join_if_launched() {
  int n = launched_size();
  if (n <= 0) return nullptr;
#ifdef MOE_HAVE_MPI
  if (MPI_Init(nullptr, nullptr) != MPI_SUCCESS) fail("MPI_Init failed");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<Cluster>(new Cluster(rank, size));
#else
  if (n > 1)
    fail("started by mpirun with ", n, " ranks, but this moe was built without MPI (install libopenmpi-dev, "
         "e.g. with scripts/install-deps.sh, and rebuild); or split the input by hand with --shard I/N");
  return nullptr;
#endif
}

Cluster::~Cluster() {
#ifdef MOE_HAVE_MPI
  MPI_Finalize();
#endif
}

void Cluster::barrier() {
#ifdef MOE_HAVE_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void Cluster::send(std::string_view bytes) {
#ifdef MOE_HAVE_MPI
  for (size_t at = 0; at < bytes.size(); at += kChunk) {
    size_t n = std::min(kChunk, bytes.size() - at);
    MPI_Send(bytes.data() + at, int(n), MPI_BYTE, 0, kDataTag, MPI_COMM_WORLD);
  }
#else
  (void)bytes;
#endif
}

void Cluster::send_end() {
#ifdef MOE_HAVE_MPI
  MPI_Send(nullptr, 0, MPI_BYTE, 0, kDataTag, MPI_COMM_WORLD);
#endif
}

void Cluster::receive(int from, const std::function<void(std::string_view)>& fn) {
#ifdef MOE_HAVE_MPI
  std::string buf;
  for (;;) {
    MPI_Status st;
    MPI_Probe(from, kDataTag, MPI_COMM_WORLD, &st);
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    buf.resize(size_t(count));
    MPI_Recv(buf.data(), count, MPI_BYTE, from, kDataTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (count == 0) return;
    fn(buf);
  }
#else
  (void)from;
  (void)fn;
#endif
}

bool Cluster::broadcast(bool value) {
#ifdef MOE_HAVE_MPI
  int v = value ? 1 : 0;
  MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return v != 0;
#else
  return value;
#endif
}

void Cluster::abort(int code) {
#ifdef MOE_HAVE_MPI
  MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

}  // namespace moe::batch
