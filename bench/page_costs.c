/*
 * What fresh pages cost on this machine, and what each way of handing a
 * worker's result to its parent costs, measured in C so that Ruby adds
 * nothing. bench/parallel.rb prints this beside its tables, so that tables
 * from different machines can be compared; `rake bench:pages` runs it alone.
 *
 *   cc -O2 -o tmp/page_costs bench/page_costs.c && tmp/page_costs [ROUNDS]
 *
 * Every figure is the median of ROUNDS (default 7) rounds, each on fresh
 * memory. Part 1 is the cost of the operations themselves; part 2 splits
 * each way of moving a result into what the worker pays (workers run side
 * by side) and what the parent pays (one parent serves every worker), from
 * "the worker has the bytes in its own memory" to "the parent can read
 * them in a shared mapping of its own".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define MB (1024 * 1024)
#define MAX_ROUNDS 64

static int rounds = 7;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, compare);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void *map_fd(int fd, size_t len, int flags) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | flags, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

static int new_memfd(size_t len) {
  int fd = memfd_create("page-costs", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, len) != 0) die("memfd");
  return fd;
}

static void pwrite_all(int fd, const char *src, size_t len) {
  for (size_t done = 0; done < len;) {
    ssize_t n = pwrite(fd, src + done, len - done, done);
    if (n <= 0) die("pwrite");
    done += n;
  }
}

static void write_all(int fd, const char *src, size_t len) {
  for (size_t done = 0; done < len;) {
    ssize_t n = write(fd, src + done, len - done);
    if (n <= 0) die("write");
    done += n;
  }
}

static void read_all(int fd, char *dst, size_t len) {
  for (size_t done = 0; done < len;) {
    ssize_t n = read(fd, dst + done, len - done);
    if (n <= 0) die("read");
    done += n;
  }
}

static void send_fd(int sock, int fd) {
  char byte = 0;
  struct iovec iov = {&byte, 1};
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = &control;
  msg.msg_controllen = sizeof control.space;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (sendmsg(sock, &msg, 0) != 1) die("sendmsg");
}

static int receive_fd(int sock) {
  char byte;
  struct iovec iov = {&byte, 1};
  union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
  } control;
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = &control;
  msg.msg_controllen = sizeof control.space;
  if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1) die("recvmsg");
  int fd;
  memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
  return fd;
}

/* Bytes a worker has computed in its own (warm) memory. */
static char *warm_buffer(size_t len) {
  char *p = malloc(len);
  if (!p) die("malloc");
  for (size_t i = 0; i < len; i++) p[i] = (char)i;
  return p;
}

/* ---- part 1: the operations ---------------------------------------- */

static void operations(void) {
  size_t len = 8 * MB;
  double touch[MAX_ROUNDS], populate[MAX_ROUNDS], pw[MAX_ROUNDS], pmap[MAX_ROUNDS];
  double un_shm[MAX_ROUNDS], un_anon[MAX_ROUNDS], pipe_t[MAX_ROUNDS], vm_t[MAX_ROUNDS];
  char *src = warm_buffer(len);
  for (int r = 0; r < rounds; r++) {
    double t = now_ms();
    char *anon = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(anon, 1, len);
    touch[r] = now_ms() - t;
    munmap(anon, len);

    int fd = new_memfd(len);
    char *m = map_fd(fd, len, 0);
    t = now_ms();
    madvise(m, len, MADV_POPULATE_WRITE);
    populate[r] = now_ms() - t;
    munmap(m, len);
    close(fd);

    fd = new_memfd(len);
    t = now_ms();
    pwrite_all(fd, src, len);
    pw[r] = now_ms() - t;
    t = now_ms();
    m = map_fd(fd, len, MAP_POPULATE);
    pmap[r] = now_ms() - t;
    munmap(m, len);
    close(fd);

    size_t big = 64 * MB;
    fd = new_memfd(big);
    m = map_fd(fd, big, 0);
    memset(m, 1, big);
    t = now_ms();
    munmap(m, big);
    un_shm[r] = now_ms() - t;
    close(fd);
    m = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 1, big);
    t = now_ms();
    munmap(m, big);
    un_anon[r] = now_ms() - t;

    int p[2];
    if (pipe(p) != 0) die("pipe");
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    pid_t child = fork();
    if (child == 0) {
      close(p[0]);
      write_all(p[1], src, len);
      _exit(0);
    }
    close(p[1]);
    char *dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    t = now_ms();
    read_all(p[0], dst, len);
    pipe_t[r] = now_ms() - t;
    close(p[0]);
    waitpid(child, NULL, 0);
    munmap(dst, len);

    int go[2];
    if (pipe(go) != 0) die("pipe");
    child = fork();
    if (child == 0) {
      char byte;
      close(go[1]);
      if (read(go[0], &byte, 1) < 0) _exit(1); /* until the parent has read */
      _exit(0);
    }
    dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct iovec local = {dst, len}, remote = {src, len};
    t = now_ms();
    if (process_vm_readv(child, &local, 1, &remote, 1, 0) != (ssize_t)len) die("process_vm_readv");
    vm_t[r] = now_ms() - t;
    close(go[1]);
    close(go[0]);
    waitpid(child, NULL, 0);
    munmap(dst, len);
  }
  free(src);
  printf("page costs of this machine (median of %d rounds, 8 MB unless said):\n", rounds);
  printf("  %-58s %6.2f ms/MiB (%.1f ms)\n", "first touch of fresh anonymous pages (malloc)", median(touch, rounds) / 8,
         median(touch, rounds));
  printf("  %-58s %6.2f ms/MiB (%.1f ms)\n", "MADV_POPULATE_WRITE of a fresh memfd mapping",
         median(populate, rounds) / 8, median(populate, rounds));
  printf("  %-58s %6.1f ms\n", "pwrite of 8 MB into a fresh memfd", median(pw, rounds));
  printf("  %-58s %6.1f ms\n", "the parent's mmap(MAP_SHARED|MAP_POPULATE) of those 8 MB", median(pmap, rounds));
  printf("  %-58s %6.1f ms / %.1f ms\n", "munmap of 64 MiB written: shmem / anonymous", median(un_shm, rounds),
         median(un_anon, rounds));
  printf("  %-58s %6.1f ms\n", "8 MB through a pipe into fresh memory", median(pipe_t, rounds));
  printf("  %-58s %6.1f ms\n", "process_vm_readv of 8 MB into fresh memory", median(vm_t, rounds));
}

/* ---- part 2: handing a result over --------------------------------- */

enum { PWRITE_MEMFD, POPULATE_COPY, VM_READV, PIPE_COPY, WAYS };
static const char *way_names[WAYS] = {
    "worker pwrite()s into a fresh memfd, sends it (ours)",
    "worker populates a fresh memfd mapping, memcpy()s into it",
    "parent process_vm_readv()s into a populated memfd mapping",
    "worker write()s to a pipe, parent read()s (the gem, no Marshal)",
};

/* One round trip of `way` for `len` bytes: the worker's and the parent's
 * milliseconds. The worker is a forked child holding warm bytes. */
static void hand_over(int way, size_t len, double *worker_ms, double *parent_ms) {
  int sv[2], times[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe(times) != 0) die("socketpair");
  char *src = warm_buffer(len);
  pid_t child = fork();
  if (child == 0) {
    close(sv[0]);
    close(times[0]);
    double t = now_ms();
    if (way == PWRITE_MEMFD || way == POPULATE_COPY) {
      int fd = new_memfd(len);
      if (way == PWRITE_MEMFD) {
        pwrite_all(fd, src, len);
      } else {
        char *m = map_fd(fd, len, 0);
        madvise(m, len, MADV_POPULATE_WRITE);
        memcpy(m, src, len);
        munmap(m, len);
      }
      send_fd(sv[1], fd);
      close(fd);
    } else if (way == PIPE_COPY) {
      write_all(sv[1], src, len);
    } else { /* VM_READV: the worker only says where its bytes are, then waits */
      uintptr_t where = (uintptr_t)src;
      write_all(sv[1], (char *)&where, sizeof where);
      char byte;
      if (read(sv[1], &byte, 1) < 0) _exit(1);
    }
    double spent = now_ms() - t;
    write_all(times[1], (char *)&spent, sizeof spent);
    _exit(0);
  }
  close(sv[1]);
  close(times[1]);
  double t = now_ms();
  char *mapped;
  if (way == PWRITE_MEMFD || way == POPULATE_COPY) {
    int fd = receive_fd(sv[0]);
    t = now_ms(); /* the parent's part starts when the descriptor is there */
    mapped = map_fd(fd, len, MAP_POPULATE);
    close(fd);
  } else if (way == PIPE_COPY) {
    mapped = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    read_all(sv[0], mapped, len);
  } else {
    uintptr_t where;
    read_all(sv[0], (char *)&where, sizeof where);
    t = now_ms();
    int fd = new_memfd(len);
    mapped = map_fd(fd, len, 0);
    close(fd);
    madvise(mapped, len, MADV_POPULATE_WRITE);
    struct iovec local = {mapped, len}, remote = {(void *)where, len};
    if (process_vm_readv(child, &local, 1, &remote, 1, 0) != (ssize_t)len) die("process_vm_readv");
    write_all(sv[0], "x", 1);
  }
  *parent_ms = now_ms() - t;
  read_all(times[0], (char *)worker_ms, sizeof *worker_ms);
  if (way == VM_READV) *worker_ms = 0; /* it only waited for the parent */
  waitpid(child, NULL, 0);
  munmap(mapped, len);
  close(sv[0]);
  close(times[0]);
  free(src);
}

static void ways(void) {
  size_t sizes[] = {8 * MB, 100 * 1000};
  const char *size_names[] = {"8 MB", "100 KB"};
  printf("\nhanding one result to the parent, worker's part + parent's part (median of %d):\n", rounds);
  for (int s = 0; s < 2; s++) {
    for (int w = 0; w < WAYS; w++) {
      double worker[MAX_ROUNDS], parent[MAX_ROUNDS];
      for (int r = 0; r < rounds; r++) hand_over(w, sizes[s], &worker[r], &parent[r]);
      double wm = median(worker, rounds), pm = median(parent, rounds);
      printf("  %-6s %-64s worker %7.3f ms  parent %7.3f ms\n", size_names[s], way_names[w], wm, pm);
    }
  }
}

int main(int argc, char **argv) {
  if (argc > 1) rounds = atoi(argv[1]);
  if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 7;
  operations();
  ways();
  return 0;
}
