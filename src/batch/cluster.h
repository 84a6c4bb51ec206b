// cluster.h: the Open MPI side of `moe batch`: which rank this process is, and a byte stream from each
// rank to rank 0. MPI is only initialised when the process was started by mpirun (Open MPI sets
// OMPI_COMM_WORLD_SIZE; PMIx launchers set PMIX_RANK): a plain `moe batch` never touches MPI, and a
// binary built without MPI says so clearly if mpirun starts it with more than one rank. Only the main
// thread calls MPI (MPI_THREAD_SINGLE is enough: the engine's threads never do).
#pragma once
#include <functional>
#include <memory>
#include <string_view>

namespace moe::batch {

class Cluster {
 public:
  // A Cluster when started by mpirun (MPI_Init done), else nullptr. Throws moe::Error when mpirun
  // started several ranks but this binary was built without MPI.
  static std::unique_ptr<Cluster> join_if_launched();
  static bool built_with_mpi();
  ~Cluster();  // MPI_Finalize

  int rank() const { return rank_; }
  int size() const { return size_; }
  void barrier();
  // Non-root ranks: sends `bytes` to rank 0 (in chunks); call once, then send_end().
  void send(std::string_view bytes);
  void send_end();
  // Rank 0: receives what `from` sends, chunk by chunk, until its send_end().
  void receive(int from, const std::function<void(std::string_view)>& fn);
  // Rank 0's `value` on every rank.
  bool broadcast(bool value);
  // Ends every rank of the job with `code` (after a failure on one rank, so that none waits forever).
  [[noreturn]] void abort(int code);

 private:
  Cluster(int rank, int size) : rank_(rank), size_(size) {}
  int rank_ = 0, size_ = 1;
};

}  // namespace moe::batch
