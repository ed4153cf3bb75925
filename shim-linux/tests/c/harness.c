// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The C harness: a platform for libmlx5vf_linux.a written against
 * include/mlx5vf.h alone, the way a kernel driver writes one over
 * mlx5_core, with the simulated firmware (the test-only mlx5vf_sim_* entry
 * points) standing in for the command interface and the device.
 *
 *   - buffers are malloc'ed pages, registered with the simulator under
 *     IOVA = their address and IOMMU-mapped while an mkey covers them;
 *   - the device lock is a pthread mutex, ops->wake a condition variable;
 *   - SAVEs run on a "firmware thread" that delivers each completion under
 *     the device lock (the work item of a kernel driver), or, in manual
 *     mode, when a test says so;
 *   - the file helpers (set_state, do_read, do_write, do_ioctl) are the
 *     MLX5VF_RETRY loops the header documents.
 *
 * Usage: harness [--list | TEST...]; no argument runs every test. Prints
 * "N passed, N failed" and exits non-zero on any failure.
 */
#define _GNU_SOURCE
#define MLX5VF_TEST_SIM
#include "mlx5vf.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Checks */

static int failures;

#define CHECK(cond, ...)                                                          \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "CHECK FAILED %s:%d: %s: ", __FILE__,     \
				__LINE__, #cond);                                 \
			fprintf(stderr, __VA_ARGS__);                             \
			fputc('\n', stderr);                                      \
			failures++;                                               \
		}                                                                 \
	} while (0)

#define CHECK_EQ(a, b)                                                            \
	do {                                                                      \
		long long a_ = (long long)(a), b_ = (long long)(b);               \
		CHECK(a_ == b_, "%s = %lld, expected %lld", #a, a_, b_);          \
	} while (0)

/* ------------------------------------------------------------------------ */
/* The platform */

#define MAX_BUFS 256
#define QCAP 8

struct hbuf {
	uint64_t id; /* 0: free slot */
	uint8_t *mem;
	size_t len;
	int maps;
};

/* An asynchronous SAVE (or, with async_loads, LOAD) waiting to run. */
struct pending_save {
	uint64_t token;
	uint8_t in[64];
	size_t in_len;
	int is_load;
};

/* plat_new() gives the platform an ops->start_load: LOADs run on the
 * firmware thread like SAVEs (pipelined resume). */
static int async_loads;
static atomic_int async_loads_completed;

struct plat {
	struct mlx5vf_sim *sim;
	struct mlx5vf_device dev;
	pthread_mutex_t lock; /* the device lock */
	_Atomic unsigned long owner; /* pthread_self() of its holder, or 0 */
	pthread_mutex_t wait_mx;
	pthread_cond_t wake_cv;
	atomic_int wakes;

	struct hbuf bufs[MAX_BUFS];
	uint64_t next_id;
	int live_bufs;

	pthread_mutex_t q_mx;
	pthread_cond_t q_cv;
	struct pending_save q[QCAP];
	int q_head, q_len;
	int threaded, hold, stop;
	pthread_t fw;
	atomic_int saves_started, saves_completed;

	/* fault knobs */
	int fail_alloc_after;  /* < 0: off; n: the (n+1)th allocation fails */
	int exec_errno;        /* one-shot: the next exec returns it */
	long copy_budget;      /* < 0: off; bytes copies may still move */
	size_t copy_max;       /* 0: off; each copy moves at most this many */
	int (*on_copy)(struct plat *p); /* called from buffer_to_user */

	atomic_int read_waits; /* MLX5VF_RETRY waits of readers */
	int set_state_retries;
	uint32_t max_alloc_pages; /* the largest buffer asked for */
	uint64_t clock_ns; /* op_now_ns: 1 ms more at each call */
};

static struct hbuf *find_buf(struct plat *p, uint64_t id)
{
	for (int i = 0; i < MAX_BUFS; i++)
		if (id && p->bufs[i].id == id)
			return &p->bufs[i];
	return NULL;
}

static int op_exec(void *ctx, const void *in, size_t in_len, void *out, size_t out_len)
{
	struct plat *p = ctx;
	if (p->exec_errno) {
		int e = p->exec_errno;
		p->exec_errno = 0;
		return e;
	}
	return mlx5vf_sim_exec(p->sim, in, in_len, out, out_len);
}

static int queue_async(struct plat *p, const void *in, size_t in_len, uint64_t token,
		       int is_load)
{
	int rc = 0;
	if (in_len > sizeof(p->q[0].in))
		return -EINVAL;
	pthread_mutex_lock(&p->q_mx);
	if (p->q_len == QCAP) {
		rc = -EBUSY;
	} else {
		struct pending_save *s = &p->q[(p->q_head + p->q_len) % QCAP];
		s->token = token;
		memcpy(s->in, in, in_len);
		s->in_len = in_len;
		s->is_load = is_load;
		p->q_len++;
		if (!is_load)
			atomic_fetch_add(&p->saves_started, 1);
		pthread_cond_broadcast(&p->q_cv);
	}
	pthread_mutex_unlock(&p->q_mx);
	return rc;
}

static int op_start_save(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return queue_async(ctx, in, in_len, token, 0);
}

static int op_start_load(void *ctx, const void *in, size_t in_len, uint64_t token)
{
	return queue_async(ctx, in, in_len, token, 1);
}

static int op_alloc_buffer(void *ctx, uint32_t npages, uint32_t dir, uint64_t *buffer)
{
	struct plat *p = ctx;
	CHECK(npages > 0, "alloc of 0 pages");
	if (npages > p->max_alloc_pages)
		p->max_alloc_pages = npages;
	CHECK(dir == MLX5VF_DMA_TO_DEVICE || dir == MLX5VF_DMA_FROM_DEVICE, "dir %u", dir);
	if (p->fail_alloc_after == 0) {
		p->fail_alloc_after = -1;
		return -ENOMEM;
	}
	if (p->fail_alloc_after > 0)
		p->fail_alloc_after--;
	for (int i = 0; i < MAX_BUFS; i++) {
		struct hbuf *b = &p->bufs[i];
		if (b->id)
			continue;
		b->len = (size_t)npages * MLX5VF_PAGE_SIZE;
		b->mem = aligned_alloc(MLX5VF_PAGE_SIZE, b->len);
		if (!b->mem)
			return -ENOMEM;
		memset(b->mem, 0xa5, b->len);
		if (mlx5vf_sim_mem_add(p->sim, (uint64_t)(uintptr_t)b->mem, b->mem, b->len)) {
			free(b->mem);
			return -ENOMEM;
		}
		b->id = ++p->next_id;
		b->maps = 0;
		p->live_bufs++;
		*buffer = b->id;
		return 0;
	}
	return -ENOMEM;
}

static void unmap_iommu(struct plat *p, const uint64_t *buffers, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		struct hbuf *b = find_buf(p, buffers[i]);
		if (!b)
			continue;
		if (--b->maps == 0)
			CHECK_EQ(mlx5vf_sim_iommu_unmap(p->sim, (uint64_t)(uintptr_t)b->mem, b->len), 0);
	}
}

static int op_map_buffers(void *ctx, uint32_t pd, const uint64_t *buffers, size_t count,
			  uint32_t *mkey)
{
	struct plat *p = ctx;
	uint32_t npages = 0;
	size_t mapped;
	int rc = 0;

	for (mapped = 0; mapped < count; mapped++) {
		struct hbuf *b = find_buf(p, buffers[mapped]);
		if (!b) {
			rc = -EINVAL;
			goto undo;
		}
		if (b->maps == 0 &&
		    mlx5vf_sim_iommu_map(p->sim, (uint64_t)(uintptr_t)b->mem, b->len)) {
			rc = -ENOMEM;
			goto undo;
		}
		b->maps++;
		npages += (uint32_t)(b->len / MLX5VF_PAGE_SIZE);
	}
	size_t in_len = mlx5vf_create_mkey_in_len(npages);
	uint8_t *in = calloc(1, in_len ? in_len : 1);
	uint64_t *pages = calloc(npages ? npages : 1, sizeof(*pages));
	if (!in || !pages || !in_len) {
		free(in);
		free(pages);
		rc = -ENOMEM;
		goto undo;
	}
	uint32_t n = 0;
	for (size_t i = 0; i < count; i++) {
		struct hbuf *b = find_buf(p, buffers[i]);
		for (size_t off = 0; off < b->len; off += MLX5VF_PAGE_SIZE)
			pages[n++] = (uint64_t)(uintptr_t)b->mem + off;
	}
	int64_t len = mlx5vf_encode_create_mkey(in, in_len, pd, pages, npages);
	CHECK_EQ(len, (int64_t)in_len);
	uint8_t out[MLX5VF_CREATE_MKEY_OUT_LEN];
	rc = op_exec(p, in, (size_t)len, out, sizeof(out));
	if (!rc)
		rc = mlx5vf_decode_create_mkey(out, sizeof(out), mkey);
	free(in);
	free(pages);
	if (!rc)
		return 0;
undo:
	unmap_iommu(p, buffers, mapped);
	return rc;
}

static int op_unmap_buffers(void *ctx, uint32_t mkey, const uint64_t *buffers, size_t count)
{
	struct plat *p = ctx;
	uint8_t in[MLX5VF_DESTROY_MKEY_IN_LEN], out[MLX5VF_DESTROY_MKEY_OUT_LEN];
	CHECK_EQ(mlx5vf_encode_destroy_mkey(in, sizeof(in), mkey), (int)sizeof(in));
	int rc = mlx5vf_sim_exec(p->sim, in, sizeof(in), out, sizeof(out));
	if (!rc)
		rc = mlx5vf_decode_destroy_mkey(out, sizeof(out));
	unmap_iommu(p, buffers, count);
	return rc;
}

static void op_free_buffer(void *ctx, uint64_t buffer)
{
	struct plat *p = ctx;
	struct hbuf *b = find_buf(p, buffer);
	CHECK(b != NULL, "free of unknown buffer %llu", (unsigned long long)buffer);
	if (!b)
		return;
	CHECK_EQ(b->maps, 0);
	CHECK_EQ(mlx5vf_sim_mem_remove(p->sim, (uint64_t)(uintptr_t)b->mem), 0);
	free(b->mem);
	memset(b, 0, sizeof(*b));
	p->live_bufs--;
}

static uint32_t op_crc32c(void *ctx, uint64_t buffer, uint64_t offset, uint64_t len, uint32_t crc)
{
	struct hbuf *b = find_buf(ctx, buffer);
	CHECK(b && offset + len <= b->len, "crc32c outside buffer");
	if (!b || offset + len > b->len)
		return 0;
	return mlx5vf_crc32c(crc, b->mem + offset, (size_t)len);
}

/* The user copies: memcpy with the fault knobs (copy_to_user's short count). */
static int64_t user_copy(struct plat *p, void *dst, const void *src, size_t len)
{
	size_t n = len;
	if (p->copy_max && n > p->copy_max)
		n = p->copy_max;
	if (p->copy_budget >= 0) {
		if ((long)n > p->copy_budget)
			n = (size_t)p->copy_budget;
		p->copy_budget -= (long)n;
	}
	if (len && !n && p->copy_budget >= 0)
		return -EFAULT;
	memcpy(dst, src, n);
	return (int64_t)n;
}

static int64_t op_buffer_to_user(void *ctx, void *user_dst, uint64_t buffer, uint64_t offset,
				 size_t len)
{
	struct plat *p = ctx;
	struct hbuf *b = find_buf(p, buffer);
	CHECK(b && offset + len <= b->len, "buffer_to_user outside buffer");
	if (!b || offset + len > b->len)
		return -EFAULT;
	/* This thread does not hold the device lock here (a fault could sleep). */
	CHECK(atomic_load(&p->owner) != (unsigned long)pthread_self(), "copy under the lock");
	if (p->on_copy)
		p->on_copy(p);
	return user_copy(p, user_dst, b->mem + offset, len);
}

static int64_t op_buffer_from_user(void *ctx, uint64_t buffer, uint64_t offset,
				   const void *user_src, size_t len)
{
	struct plat *p = ctx;
	struct hbuf *b = find_buf(p, buffer);
	CHECK(b && offset + len <= b->len, "buffer_from_user outside buffer");
	if (!b || offset + len > b->len)
		return -EFAULT;
	return user_copy(p, b->mem + offset, user_src, len);
}

static int64_t op_copy_to_user(void *ctx, void *user_dst, const void *src, size_t len)
{
	return user_copy(ctx, user_dst, src, len);
}

static int64_t op_copy_from_user(void *ctx, void *dst, const void *user_src, size_t len)
{
	return user_copy(ctx, dst, user_src, len);
}

static void op_lock(void *ctx)
{
	struct plat *p = ctx;
	pthread_mutex_lock(&p->lock);
	atomic_store(&p->owner, (unsigned long)pthread_self());
}

static bool op_trylock(void *ctx)
{
	struct plat *p = ctx;
	if (pthread_mutex_trylock(&p->lock))
		return false;
	atomic_store(&p->owner, (unsigned long)pthread_self());
	return true;
}

static void op_unlock(void *ctx)
{
	struct plat *p = ctx;
	CHECK(atomic_load(&p->owner) == (unsigned long)pthread_self(), "unlock by a non-holder");
	atomic_store(&p->owner, 0);
	pthread_mutex_unlock(&p->lock);
}

static void op_wake(void *ctx)
{
	struct plat *p = ctx;
	/* Called under the device lock, by its holder. */
	CHECK(atomic_load(&p->owner) == (unsigned long)pthread_self(), "wake without the lock");
	pthread_mutex_lock(&p->wait_mx);
	atomic_fetch_add(&p->wakes, 1);
	pthread_cond_broadcast(&p->wake_cv);
	pthread_mutex_unlock(&p->wait_mx);
}

/* A clock that moves 1 ms at each reading: every command "takes" 1 ms, so
 * the core measures a 1 ms latency and SAVEs that move their bytes in no
 * time beyond it (the fastest rate it can compute). */
static uint64_t op_now_ns(void *ctx)
{
	struct plat *p = ctx;
	CHECK(p->owner == (unsigned long)pthread_self(), "now_ns without the device lock");
	p->clock_ns += 1000000;
	return p->clock_ns;
}

static const struct mlx5vf_platform_ops plat_ops = {
	.exec = op_exec,
	.start_save = op_start_save,
	.alloc_buffer = op_alloc_buffer,
	.map_buffers = op_map_buffers,
	.unmap_buffers = op_unmap_buffers,
	.free_buffer = op_free_buffer,
	.crc32c = op_crc32c,
	.buffer_to_user = op_buffer_to_user,
	.buffer_from_user = op_buffer_from_user,
	.copy_to_user = op_copy_to_user,
	.copy_from_user = op_copy_from_user,
	.lock = op_lock,
	.trylock = op_trylock,
	.unlock = op_unlock,
	.wake = op_wake,
};

/* ------------------------------------------------------------------------ */
/* SAVE completions: the firmware thread, or one at a time by hand */

static int pop_save(struct plat *p, struct pending_save *s)
{
	int got = 0;
	pthread_mutex_lock(&p->q_mx);
	if (p->q_len) {
		*s = p->q[p->q_head];
		p->q_head = (p->q_head + 1) % QCAP;
		p->q_len--;
		got = 1;
	}
	pthread_mutex_unlock(&p->q_mx);
	return got;
}

/* What the completion's work item does: run the SAVE's output through the
 * device under the lock. */
static void deliver(struct plat *p, const struct pending_save *s)
{
	uint8_t out[MLX5VF_SAVE_OUT_LEN];
	int status = mlx5vf_sim_exec(p->sim, s->in, s->in_len, out, sizeof(out));
	mlx5vf_lock(&p->dev);
	int rc = s->is_load ? mlx5vf_load_complete(&p->dev, s->token, status, out, sizeof(out))
			    : mlx5vf_save_complete(&p->dev, s->token, status, out, sizeof(out));
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(rc, 0);
	if (s->is_load)
		atomic_fetch_add(&async_loads_completed, 1);
	else
		atomic_fetch_add(&p->saves_completed, 1);
}

/* Manual mode: completes the oldest pending SAVE; 0 if none was pending. */
static int complete_one(struct plat *p)
{
	struct pending_save s;
	if (!pop_save(p, &s))
		return 0;
	deliver(p, &s);
	return 1;
}

static void *fw_thread(void *arg)
{
	struct plat *p = arg;
	pthread_mutex_lock(&p->q_mx);
	for (;;) {
		while (!p->stop && (p->q_len == 0 || p->hold))
			pthread_cond_wait(&p->q_cv, &p->q_mx);
		if (p->stop)
			break;
		struct pending_save s = p->q[p->q_head];
		p->q_head = (p->q_head + 1) % QCAP;
		p->q_len--;
		pthread_mutex_unlock(&p->q_mx);
		deliver(p, &s);
		pthread_mutex_lock(&p->q_mx);
	}
	pthread_mutex_unlock(&p->q_mx);
	return NULL;
}

static void set_hold(struct plat *p, int hold)
{
	pthread_mutex_lock(&p->q_mx);
	p->hold = hold;
	pthread_cond_broadcast(&p->q_cv);
	pthread_mutex_unlock(&p->q_mx);
}

/*
 * Waits until mlx5vf_events() moves past seq. In manual mode nothing else
 * would move it, so the pending SAVE is completed here instead.
 */
static void wait_events(struct plat *p, uint32_t seq)
{
	if (!p->threaded) {
		if (mlx5vf_events(&p->dev) == seq)
			CHECK(complete_one(p), "asked to wait with no SAVE pending");
		return;
	}
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 20;
	pthread_mutex_lock(&p->wait_mx);
	while (mlx5vf_events(&p->dev) == seq) {
		if (pthread_cond_timedwait(&p->wake_cv, &p->wait_mx, &deadline) == ETIMEDOUT) {
			CHECK(0, "no event for 20 s");
			break;
		}
	}
	pthread_mutex_unlock(&p->wait_mx);
}

/* ------------------------------------------------------------------------ */
/* Setup and the documented caller loops */

static struct mlx5vf_config small_chunks(uint64_t chunk)
{
	struct mlx5vf_config cfg;
	mlx5vf_config_default(&cfg);
	cfg.chunk_size = chunk;
	return cfg;
}

static struct plat *plat_new(const char *spec, const struct mlx5vf_config *cfg, int threaded)
{
	struct plat *p = calloc(1, sizeof(*p));
	static uint8_t scratch[MLX5VF_PROBE_SCRATCH_LEN];
	p->sim = mlx5vf_sim_new(spec);
	CHECK(p->sim != NULL, "bad spec %s", spec);
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->wait_mx, NULL);
	pthread_cond_init(&p->wake_cv, NULL);
	pthread_mutex_init(&p->q_mx, NULL);
	pthread_cond_init(&p->q_cv, NULL);
	p->fail_alloc_after = -1;
	p->copy_budget = -1;
	p->threaded = threaded;
	struct mlx5vf_platform_ops ops = plat_ops;
	if (async_loads)
		ops.start_load = op_start_load;
	CHECK_EQ(mlx5vf_device_init(&p->dev, &ops, p, cfg), 0);
	mlx5vf_lock(&p->dev);
	int rc = mlx5vf_device_probe(&p->dev, 0, scratch, sizeof(scratch));
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(rc, 0);
	if (threaded)
		pthread_create(&p->fw, NULL, fw_thread, p);
	return p;
}

static int device_fini(struct plat *p)
{
	int rc;
	for (;;) {
		uint32_t seq = mlx5vf_events(&p->dev);
		rc = mlx5vf_device_fini(&p->dev);
		if (rc != MLX5VF_RETRY)
			break;
		wait_events(p, seq);
	}
	return rc;
}

/* Tears down and checks that nothing leaked: buffers, PDs, mkeys, IOMMU. */
static void plat_free(struct plat *p)
{
	CHECK_EQ(device_fini(p), 0);
	if (p->threaded) {
		pthread_mutex_lock(&p->q_mx);
		p->stop = 1;
		pthread_cond_broadcast(&p->q_cv);
		pthread_mutex_unlock(&p->q_mx);
		pthread_join(p->fw, NULL);
	}
	CHECK_EQ(p->q_len, 0);
	CHECK_EQ(p->live_bufs, 0);
	CHECK(mlx5vf_sim_idle(p->sim), "firmware still holds PDs, mkeys or mappings");
	mlx5vf_sim_free(p->sim);
	free(p);
}

static uint32_t get_state(struct plat *p)
{
	uint32_t st = 99;
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_get_state(&p->dev, &st), 0);
	mlx5vf_unlock(&p->dev);
	return st;
}

/* migration_set_state: the loop of the header. */
static int set_state(struct plat *p, uint32_t state, struct mlx5vf_file *f)
{
	struct mlx5vf_file scratch;
	int rc;
	memset(&scratch, 0, sizeof(scratch));
	mlx5vf_lock(&p->dev);
	for (;;) {
		uint32_t seq = mlx5vf_events(&p->dev);
		rc = mlx5vf_set_state(&p->dev, state, f ? f : &scratch);
		if (rc != MLX5VF_RETRY)
			break;
		p->set_state_retries++;
		mlx5vf_unlock(&p->dev);
		wait_events(p, seq);
		mlx5vf_lock(&p->dev);
	}
	mlx5vf_unlock(&p->dev);
	CHECK(f || rc <= 0, "a file opened and nobody took it");
	return rc;
}

/* read(): the loop of the header. Returns bytes or -errno. */
static long do_read(struct plat *p, struct mlx5vf_file *f, void *buf, size_t len, uint32_t flags)
{
	size_t done = 0;
	int rc;
	for (;;) {
		uint32_t seq = mlx5vf_events(&p->dev);
		rc = mlx5vf_file_read(f, buf, len, flags, &done);
		if (rc != MLX5VF_RETRY)
			break;
		CHECK_EQ(done, 0);
		atomic_fetch_add(&p->read_waits, 1);
		wait_events(p, seq);
	}
	return rc ? rc : (long)done;
}

static long do_write(struct plat *p, struct mlx5vf_file *f, const void *buf, size_t len,
		     uint32_t flags)
{
	size_t done = 0;
	int rc;
	for (;;) {
		uint32_t seq = mlx5vf_events(&p->dev);
		rc = mlx5vf_file_write(f, buf, len, flags, &done);
		if (rc != MLX5VF_RETRY)
			break;
		CHECK_EQ(done, 0);
		wait_events(p, seq);
	}
	return rc ? rc : (long)done;
}

/* Writes all of buf (write() may take less). */
static long write_all(struct plat *p, struct mlx5vf_file *f, const uint8_t *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		long n = do_write(p, f, buf + off, len - off, 0);
		if (n <= 0)
			return n < 0 ? n : -EIO;
		off += (size_t)n;
	}
	return (long)off;
}

static int do_ioctl(struct plat *p, struct mlx5vf_file *f, uint32_t cmd,
		    struct mlx5vf_precopy_info *info)
{
	int rc;
	for (;;) {
		uint32_t seq = mlx5vf_events(&p->dev);
		rc = mlx5vf_file_ioctl(f, cmd, info);
		if (rc != MLX5VF_RETRY)
			break;
		wait_events(p, seq);
	}
	return rc;
}

static int precopy_info(struct plat *p, struct mlx5vf_file *f, struct mlx5vf_precopy_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	info->flags = 0x5a;
	return do_ioctl(p, f, MLX5VF_MIG_GET_PRECOPY_INFO, info);
}

static int digests_equal(struct plat *a, struct plat *b)
{
	uint8_t da[32], db[32];
	CHECK_EQ(mlx5vf_sim_digest(a->sim, 0, da), 0);
	CHECK_EQ(mlx5vf_sim_digest(b->sim, 0, db), 0);
	return memcmp(da, db, sizeof(da)) == 0;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Moves the source's data to the destination until the read answers with
 * something other than bytes; returns that answer (0 = EOF, -ENOMSG, ...). */
static long pump(struct plat *src, struct mlx5vf_file *sf, struct plat *dst,
		 struct mlx5vf_file *df, size_t max_read, uint64_t *total)
{
	uint8_t *buf = malloc(max_read);
	long n;
	for (;;) {
		size_t want = 1 + (size_t)(rng() % max_read);
		n = do_read(src, sf, buf, want, 0);
		if (n <= 0)
			break;
		CHECK(n <= (long)want, "read more than asked");
		*total += (uint64_t)n;
		long w = write_all(dst, df, buf, (size_t)n);
		CHECK_EQ(w, n);
		if (w != n) {
			n = -EIO;
			break;
		}
	}
	free(buf);
	return n;
}

/* ------------------------------------------------------------------------ */
/* Tests */

static void t_abi_layout(void)
{
	struct mlx5vf_config cfg;
	struct mlx5vf_device dev;
	struct mlx5vf_platform_ops ops = plat_ops;
	uint8_t scratch[MLX5VF_PROBE_SCRATCH_LEN];

	CHECK_EQ(sizeof(struct mlx5vf_device), MLX5VF_DEVICE_SIZE);
	CHECK_EQ(_Alignof(struct mlx5vf_device), MLX5VF_DEVICE_ALIGN);
	CHECK_EQ(sizeof(struct mlx5vf_file), MLX5VF_FILE_SIZE);
	CHECK_EQ(sizeof(struct mlx5vf_precopy_info), 24);
	CHECK_EQ(MLX5VF_MIG_GET_PRECOPY_INFO, 0x3B79);

	mlx5vf_config_default(&cfg);
	CHECK_EQ(cfg.chunk_size, 8 << 20);
	CHECK_EQ(cfg.chunk_slots, 2);
	CHECK_EQ(cfg.flags, MLX5VF_CFG_CHUNKS | MLX5VF_CFG_PRECOPY | MLX5VF_CFG_INTEGRITY |
				    MLX5VF_CFG_MEASURED_CHUNKS);
	CHECK_EQ(cfg.memory_cap, 64 << 20);
	CHECK_EQ(cfg.max_save_buffer, (1ull << 32) - 4096);

	/* init refuses what it cannot use */
	CHECK_EQ(mlx5vf_device_init(NULL, &plat_ops, NULL, NULL), -EINVAL);
	CHECK_EQ(mlx5vf_device_init(&dev, NULL, NULL, NULL), -EINVAL);
	ops.wake = NULL;
	CHECK_EQ(mlx5vf_device_init(&dev, &ops, NULL, NULL), -EINVAL);
	cfg.chunk_slots = 9;
	CHECK_EQ(mlx5vf_device_init(&dev, &plat_ops, NULL, &cfg), -EINVAL);
	mlx5vf_config_default(&cfg);
	cfg.chunk_size = 100;
	CHECK_EQ(mlx5vf_device_init(&dev, &plat_ops, NULL, &cfg), -EINVAL);

	/* uninitialised (zeroed) storage is refused, never used */
	memset(&dev, 0, sizeof(dev));
	uint32_t st;
	CHECK_EQ(mlx5vf_get_state(&dev, &st), -EINVAL);
	CHECK_EQ(mlx5vf_migration_flags(&dev), 0);
	struct mlx5vf_file zero;
	memset(&zero, 0, sizeof(zero));
	size_t done = 1;
	CHECK_EQ(mlx5vf_file_read(&zero, scratch, 1, 0, &done), -ENODEV);
	CHECK_EQ(done, 0);
	CHECK_EQ(mlx5vf_file_kind(&zero), 0);
	CHECK_EQ(mlx5vf_file_poll(&zero), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLRDHUP);

	/* the portable CRC-32C */
	CHECK_EQ(mlx5vf_crc32c(0, "123456789", 9), 0xe3069283u);
	CHECK_EQ(mlx5vf_crc32c(mlx5vf_crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);

	/* probing: the VF and the scratch */
	struct plat *p = calloc(1, sizeof(*p));
	p->sim = mlx5vf_sim_new("sim:state=4M,migratable=off");
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->wait_mx, NULL);
	pthread_cond_init(&p->wake_cv, NULL);
	pthread_mutex_init(&p->q_mx, NULL);
	pthread_cond_init(&p->q_cv, NULL);
	p->fail_alloc_after = -1;
	p->copy_budget = -1;
	CHECK_EQ(mlx5vf_device_init(&p->dev, &plat_ops, p, NULL), 0);
	struct mlx5vf_probe_info info;
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_device_probe_info(&p->dev, &info), -ENODEV);
	CHECK_EQ(mlx5vf_device_probe(&p->dev, 0, scratch, sizeof(scratch) - 1), -EINVAL);
	CHECK_EQ(mlx5vf_device_probe(&p->dev, 0, scratch, sizeof(scratch)), -EOPNOTSUPP);
	CHECK_EQ(mlx5vf_set_state(&p->dev, MLX5VF_STATE_STOP, &zero), -ENODEV);
	uint64_t size;
	CHECK_EQ(mlx5vf_get_data_size(&p->dev, &size), -ENODEV);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(mlx5vf_migration_flags(&p->dev), 0);
	CHECK_EQ(mlx5vf_device_fini(&p->dev), 0);
	CHECK_EQ(mlx5vf_device_fini(&p->dev), -EINVAL); /* dead storage */
	mlx5vf_sim_free(p->sim);
	free(p);

	p = plat_new("sim:state=4M,precopy=off,chunks=off", NULL, 0);
	CHECK_EQ(mlx5vf_migration_flags(&p->dev), MLX5VF_MIGRATION_STOP_COPY | MLX5VF_MIGRATION_P2P);
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_device_probe_info(&p->dev, &info), 0);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(info.vf, 0);
	CHECK_EQ(info.flags & MLX5VF_PROBE_CHUNK_MODE, 0);
	plat_free(p);

	p = plat_new("sim:state=4M", NULL, 0);
	CHECK_EQ(mlx5vf_migration_flags(&p->dev),
		 MLX5VF_MIGRATION_STOP_COPY | MLX5VF_MIGRATION_P2P | MLX5VF_MIGRATION_PRE_COPY);
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_device_probe_info(&p->dev, &info), 0);
	CHECK_EQ(mlx5vf_get_data_size(&p->dev, &size), 0);
	mlx5vf_unlock(&p->dev);
	CHECK(info.flags & MLX5VF_PROBE_CHUNK_MODE, "chunk mode");
	CHECK_EQ(size, 4 << 20);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	plat_free(p);
}

/* vfio_mig_get_next_state() for every pair and the four flag sets
 * (reference/vfio-uapi.md 2.5; E = -EINVAL). */
/*
 * A caller built with another version of the header must be refused at
 * init, before the library reads structures laid out differently.
 */
static void t_stale_header_refused(void)
{
	struct mlx5vf_device dev;
	const struct mlx5vf_abi ours = {
		MLX5VF_ABI_VERSION,
		(uint32_t)sizeof(struct mlx5vf_device),
		(uint32_t)sizeof(struct mlx5vf_file),
		(uint32_t)sizeof(struct mlx5vf_config),
		(uint32_t)sizeof(struct mlx5vf_probe_info),
		(uint32_t)sizeof(struct mlx5vf_platform_ops),
	};
	struct mlx5vf_abi stale = ours;

	memset(&dev, 0xa5, sizeof(dev));
	stale.version = MLX5VF_ABI_VERSION - 1;
	CHECK_EQ(mlx5vf_device_init_abi(&dev, &plat_ops, NULL, NULL, &stale), -EPROTO);
	stale = ours;
	stale.ops_size -= (uint32_t)sizeof(void *); /* an older ops table */
	CHECK_EQ(mlx5vf_device_init_abi(&dev, &plat_ops, NULL, NULL, &stale), -EPROTO);
	stale = ours;
	stale.device_size += 64;
	CHECK_EQ(mlx5vf_device_init_abi(&dev, &plat_ops, NULL, NULL, &stale), -EPROTO);
	CHECK_EQ(mlx5vf_device_init_abi(&dev, &plat_ops, NULL, NULL, NULL), -EPROTO);
	/* Nothing was written: the storage is still not a device. */
	{
		uint8_t *b = (uint8_t *)&dev;
		size_t untouched = 0;
		for (size_t i = 0; i < sizeof(dev); i++)
			untouched += b[i] == 0xa5;
		CHECK_EQ(untouched, sizeof(dev));
	}
	/* The header's own view is the library's: every plat_new() in this
	 * harness initialises through the inline mlx5vf_device_init(). */
}

static void t_next_state(void)
{
	enum { E = 0xff, S = 1, R = 2, SC = 3, RE = 4, RP = 5, PC = 6, PCP = 7 };
	static const uint8_t all[8][8] = {
		/* new: ERR STOP RUN SC RES RP PC PCP */
		{ E, E, E, E, E, E, E, E },         /* ERROR */
		{ E, S, RP, SC, RE, RP, RP, RP },   /* STOP */
		{ E, RP, R, RP, RP, RP, PC, RP },   /* RUNNING */
		{ E, S, S, SC, S, S, E, E },        /* STOP_COPY */
		{ E, S, S, S, RE, S, S, S },        /* RESUMING */
		{ E, S, R, S, S, RP, R, PCP },      /* RUNNING_P2P */
		{ E, R, R, PCP, R, R, PC, PCP },    /* PRE_COPY */
		{ E, RP, RP, SC, RP, RP, PC, PCP }, /* PRE_COPY_P2P */
	};
	static const uint8_t stop_copy_only[8][8] = {
		{ E, E, E, E, E, E, E, E },
		{ E, S, R, SC, RE, E, E, E },
		{ E, S, R, S, S, E, E, E },
		{ E, S, S, SC, S, E, E, E },
		{ E, S, S, S, RE, E, E, E },
		{ E, E, E, E, E, E, E, E },
		{ E, E, E, E, E, E, E, E },
		{ E, E, E, E, E, E, E, E },
	};
	static const uint8_t pre_copy_no_p2p[8][8] = {
		{ E, E, E, E, E, E, E, E },
		{ E, S, R, SC, RE, E, R, E },
		{ E, S, R, S, S, E, PC, E },
		{ E, S, S, SC, S, E, E, E },
		{ E, S, S, S, RE, E, S, E },
		{ E, E, E, E, E, E, E, E },
		{ E, R, R, SC, R, E, PC, E },
		{ E, E, E, E, E, E, E, E },
	};
	const struct {
		uint64_t flags;
		const uint8_t (*t)[8];
	} sets[] = { { 7, all }, { 1, stop_copy_only }, { 5, pre_copy_no_p2p } };
	for (size_t k = 0; k < sizeof(sets) / sizeof(sets[0]); k++) {
		for (uint32_t cur = 0; cur < 8; cur++) {
			for (uint32_t new_ = 0; new_ < 8; new_++) {
				uint32_t next = 99;
				int rc = mlx5vf_mig_next_state(cur, new_, sets[k].flags, &next);
				uint8_t want = sets[k].t[cur][new_];
				if (want == E) {
					CHECK(rc == -EINVAL, "flags %llu %u->%u: rc %d next %u",
					      (unsigned long long)sets[k].flags, cur, new_, rc, next);
				} else {
					CHECK(rc == 0 && next == want,
					      "flags %llu %u->%u: rc %d next %u, want %u",
					      (unsigned long long)sets[k].flags, cur, new_, rc, next,
					      want);
				}
			}
		}
	}
	uint32_t next;
	CHECK_EQ(mlx5vf_mig_next_state(8, 1, 7, &next), -EINVAL);
	CHECK_EQ(mlx5vf_mig_next_state(1, 8, 7, &next), -EINVAL);
	CHECK_EQ(mlx5vf_mig_next_state(1, 2, 7, NULL), -EINVAL);
}

static void roundtrip(const char *src_spec, const char *dst_spec, const struct mlx5vf_config *cfg,
		      size_t max_read)
{
	struct plat *src = plat_new(src_spec, cfg, 1);
	struct plat *dst = plat_new(dst_spec, cfg, 1);
	struct mlx5vf_file sf, df;
	uint64_t total = 0;

	CHECK(!digests_equal(src, dst), "the two devices start equal");
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(mlx5vf_file_kind(&df), MLX5VF_FILE_RESUMING);
	/* RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY: one call, one new file */
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(mlx5vf_file_kind(&sf), MLX5VF_FILE_SAVING);
	CHECK_EQ(get_state(src), MLX5VF_STATE_STOP_COPY);
	CHECK_EQ(mlx5vf_file_poll(&df),
		 MLX5VF_EPOLLIN | MLX5VF_EPOLLOUT | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLWRNORM);

	CHECK_EQ(pump(src, &sf, dst, &df, max_read, &total), 0);
	CHECK(total > (4u << 20), "stream of %llu bytes", (unsigned long long)total);
	/* end of stream is sticky, and readable */
	uint8_t b;
	CHECK_EQ(do_read(src, &sf, &b, 1, 0), 0);
	CHECK_EQ(do_read(src, &sf, &b, 1, MLX5VF_IO_NONBLOCK), 0);
	CHECK_EQ(mlx5vf_file_poll(&sf), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM);

	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP, NULL), 0);
	/* the arc disabled the file */
	CHECK_EQ(do_read(src, &sf, &b, 1, 0), -ENODEV);
	CHECK_EQ(mlx5vf_file_poll(&sf), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLRDHUP);
	mlx5vf_file_release(&sf);
	CHECK_EQ(mlx5vf_file_kind(&sf), 0);
	mlx5vf_file_release(&sf); /* twice is harmless */

	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0); /* verifies the stream */
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RUNNING, NULL), 0);
	CHECK_EQ(do_write(dst, &df, &b, 1, 0), -ENODEV);
	mlx5vf_file_release(&df);
	CHECK(digests_equal(src, dst), "destination digest differs from the source");
	plat_free(src);
	plat_free(dst);
}

static void t_roundtrip_chunked(void)
{
	struct mlx5vf_config cfg = small_chunks(1 << 20);
	roundtrip("sim:state=24M,object=128K-768K,seed=3", "sim:state=6M,seed=9", &cfg, 300000);
}

/* Pipelined resume through the C ABI: LOADs start asynchronously and
 * complete on the firmware thread; the stream still arrives whole. */
static void t_roundtrip_async_load(void)
{
	struct mlx5vf_config cfg = small_chunks(1 << 20);
	int before = atomic_load(&async_loads_completed);
	async_loads = 1;
	roundtrip("sim:state=24M,object=128K-768K,seed=3", "sim:state=6M,seed=9", &cfg, 300000);
	async_loads = 0;
	/* Every image went through ops->start_load and mlx5vf_load_complete(). */
	CHECK(atomic_load(&async_loads_completed) - before >= 20, "%d asynchronous LOADs",
	      atomic_load(&async_loads_completed) - before);
}

/* MLX5VF_CFG_MEASURED_CHUNKS with a clock: once a QUERY and a SAVE (of at
 * least 1 MiB) are timed, the chunks grow to what the memory cap allows
 * (8 MiB over two slots: 4 MiB); without the clock, or without the flag,
 * they stay 2 MiB. */
static void measured_case(int with_clock, uint32_t flags, uint32_t want_pages)
{
	struct mlx5vf_config cfg = small_chunks(2 << 20);
	cfg.flags = flags;
	cfg.memory_cap = 8 << 20;
	struct plat *src = plat_new("sim:state=24M,object=128K-768K,seed=3", &cfg, 1);
	struct plat *dst = plat_new("sim:state=6M,seed=9", &cfg, 1);
	if (with_clock) {
		/* The ops table is copied at init: re-initialise with the clock. */
		struct mlx5vf_platform_ops ops = plat_ops;
		ops.now_ns = op_now_ns;
		static uint8_t scratch[MLX5VF_PROBE_SCRATCH_LEN];
		CHECK_EQ(device_fini(src), 0);
		CHECK_EQ(mlx5vf_device_init(&src->dev, &ops, src, &cfg), 0);
		mlx5vf_lock(&src->dev);
		CHECK_EQ(mlx5vf_device_probe(&src->dev, 0, scratch, sizeof(scratch)), 0);
		mlx5vf_unlock(&src->dev);
	}
	struct mlx5vf_file sf, df;
	uint64_t total = 0;
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(pump(src, &sf, dst, &df, 1 << 20, &total), 0);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&sf);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RUNNING, NULL), 0);
	mlx5vf_file_release(&df);
	CHECK(digests_equal(src, dst), "destination digest differs from the source");
	CHECK(src->max_alloc_pages == want_pages, "largest source buffer %u pages, want %u (clock %llu)",
	      src->max_alloc_pages, want_pages, (unsigned long long)src->clock_ns);
	plat_free(src);
	plat_free(dst);
}

static void t_measured_chunks(void)
{
	uint32_t def = MLX5VF_CFG_CHUNKS | MLX5VF_CFG_PRECOPY | MLX5VF_CFG_INTEGRITY;
	measured_case(1, def | MLX5VF_CFG_MEASURED_CHUNKS, (4 << 20) / MLX5VF_PAGE_SIZE);
	measured_case(0, def | MLX5VF_CFG_MEASURED_CHUNKS, (2 << 20) / MLX5VF_PAGE_SIZE);
	measured_case(1, def, (2 << 20) / MLX5VF_PAGE_SIZE);
}

static void t_roundtrip_legacy(void)
{
	roundtrip("sim:state=12M,chunks=off,object=64K-1M,seed=4", "sim:state=2M,chunks=off,seed=8",
		  NULL, 1 << 20);
}

/* Copies that stop short (a fault mid-buffer) lose nothing: only what was
 * copied is consumed, on both sides. */
static void t_roundtrip_short_copies(void)
{
	struct mlx5vf_config cfg = small_chunks(1 << 20);
	struct plat *src = plat_new("sim:state=6M,object=64K-512K,seed=11", &cfg, 1);
	struct plat *dst = plat_new("sim:state=1M,seed=12", &cfg, 1);
	struct mlx5vf_file sf, df;
	uint64_t total = 0;
	src->copy_max = 1000;
	dst->copy_max = 700;
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	uint8_t buf[4096];
	long n = do_read(src, &sf, buf, sizeof(buf), 0);
	/* the records before the data, then at most 1000 bytes of a buffer */
	CHECK(n > 0 && n <= 1000 + 256, "short copy read %ld", n);
	CHECK_EQ(write_all(dst, &df, buf, (size_t)n), n);
	CHECK_EQ(pump(src, &sf, dst, &df, 8192, &total), 0);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP, NULL), 0);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&sf);
	mlx5vf_file_release(&df);
	CHECK(digests_equal(src, dst), "digest after short copies");
	plat_free(src);
	plat_free(dst);
}

/* PRE_COPY with the precopy-info ioctl, as QEMU iterates; a dirtying guest. */
static void t_precopy(void)
{
	struct mlx5vf_config cfg = small_chunks(1 << 20);
	struct plat *src = plat_new("sim:state=8M,object=64K-256K,dirty=512K,seed=21", &cfg, 1);
	struct plat *dst = plat_new("sim:state=1M,seed=22", &cfg, 1);
	struct mlx5vf_file sf, df;
	struct mlx5vf_precopy_info info;
	uint64_t total = 0, initial = 0;

	CHECK_EQ(set_state(dst, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(set_state(src, MLX5VF_STATE_PRE_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(precopy_info(src, &sf, &info), 0);
	CHECK_EQ(info.argsz, 24);
	CHECK_EQ(info.flags, 0x5a); /* echoed */
	/* chunk mode: the initial image is the first chunk's worth */
	initial = info.initial_bytes;
	CHECK(initial > (512u << 10), "initial_bytes %llu", (unsigned long long)initial);

	int rounds = 0, dirty_seen = 0;
	for (; rounds < 8; rounds++) {
		long end = pump(src, &sf, dst, &df, 1 << 20, &total);
		CHECK_EQ(end, -ENOMSG); /* PRE_COPY drained for now */
		CHECK_EQ(mlx5vf_file_poll(&sf), 0);
		mlx5vf_sim_tick(src->sim, 0, 1);
		CHECK_EQ(precopy_info(src, &sf, &info), 0);
		CHECK_EQ(info.initial_bytes, 0);
		if (info.dirty_bytes)
			dirty_seen = 1;
		if (info.dirty_bytes < (64u << 10))
			break;
	}
	CHECK(total >= initial, "read %llu of %llu initial bytes", (unsigned long long)total,
	      (unsigned long long)initial);
	CHECK(dirty_seen, "the guest dirtied nothing");

	/* PRE_COPY -> PRE_COPY_P2P -> STOP_COPY: same file, no new fd */
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP_COPY, NULL), 0);
	CHECK_EQ(precopy_info(src, &sf, &info), -EINVAL); /* not PRE_COPY any more */
	CHECK_EQ(pump(src, &sf, dst, &df, 1 << 20, &total), 0);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP, NULL), 0);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RUNNING, NULL), 0);
	mlx5vf_file_release(&sf);
	mlx5vf_file_release(&df);
	CHECK(digests_equal(src, dst), "digest after PRE_COPY");
	plat_free(src);
	plat_free(dst);
}

/* ENOMSG only when the read's first segment finds nothing: a read that
 * drains the queue returns its bytes; the next one gets ENOMSG. */
static void t_enomsg_first_segment_only(void)
{
	struct plat *p = plat_new("sim:state=2M,object=64K-128K,seed=5", NULL, 0);
	struct mlx5vf_file f;
	size_t big = 16 << 20, done;
	uint8_t *buf = malloc(big);

	CHECK_EQ(set_state(p, MLX5VF_STATE_PRE_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	/* the first SAVE is in flight: no ENOMSG while it is (the v7.1 fix) */
	CHECK_EQ(mlx5vf_file_read(&f, buf, big, MLX5VF_IO_NONBLOCK, &done), 0);
	CHECK(done > 0 && done < 256, "the prologue records: %zu bytes", done);
	CHECK_EQ(mlx5vf_file_read(&f, buf, big, MLX5VF_IO_NONBLOCK, &done), -EAGAIN);
	CHECK_EQ(mlx5vf_file_read(&f, buf, big, 0, &done), MLX5VF_RETRY);
	/* the precopy ioctl's incremental query waits for that SAVE too */
	struct mlx5vf_precopy_info info = { .argsz = sizeof(info) };
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO, &info), MLX5VF_RETRY);
	CHECK(complete_one(p), "initial SAVE");
	CHECK_EQ(mlx5vf_file_poll(&f), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM);
	long n = do_read(p, &f, buf, big, 0);
	CHECK(n > (2 << 20), "first read %ld bytes", n);
	CHECK_EQ(do_read(p, &f, buf, big, 0), -ENOMSG);
	CHECK_EQ(do_read(p, &f, buf, big, MLX5VF_IO_NONBLOCK), -ENOMSG);
	CHECK_EQ(mlx5vf_file_poll(&f), 0);
	/* PRE_COPY_P2P drained: ENOMSG too */
	CHECK_EQ(set_state(p, MLX5VF_STATE_PRE_COPY_P2P, NULL), 0);
	CHECK_EQ(do_read(p, &f, buf, big, 0), -ENOMSG);
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), 0);
	mlx5vf_file_release(&f);
	free(buf);
	plat_free(p);
}

/*
 * A new saving file starts with records the device holds itself (the
 * stream-info and STOP_COPY_SIZE records, as Linux queues STOP_COPY_SIZE):
 * they read at once. Reads them, non-blocking, until -EAGAIN; returns the
 * bytes read.
 */
static long drain_prologue(struct mlx5vf_file *f)
{
	uint8_t buf[256];
	size_t done;
	long total = 0;
	int rc;
	while ((rc = mlx5vf_file_read(f, buf, sizeof(buf), MLX5VF_IO_NONBLOCK, &done)) == 0 &&
	       done)
		total += (long)done;
	CHECK_EQ(rc, -EAGAIN);
	CHECK(total > 0, "no prologue");
	return total;
}

struct reader {
	struct plat *p;
	struct mlx5vf_file *f;
	long result;
	uint8_t buf[1 << 16];
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;
	r->result = do_read(r->p, r->f, r->buf, sizeof(r->buf), 0);
	return NULL;
}

/* Waits (bounded) until the reader thread sleeps in its MLX5VF_RETRY loop. */
static void wait_for_blocked_reader(struct plat *p, int before)
{
	for (int i = 0; i < 4000 && atomic_load(&p->read_waits) == before; i++)
		usleep(1000);
	CHECK(atomic_load(&p->read_waits) > before, "the reader never blocked");
	usleep(20000); /* let it reach its wait */
}

static void t_blocking_read_woken_by_completion(void)
{
	struct plat *p = plat_new("sim:state=4M,object=64K-256K,seed=6", NULL, 1);
	struct mlx5vf_file f;
	struct reader r = { .p = p, .f = &f };
	pthread_t t;

	set_hold(p, 1); /* firmware sits on the SAVE */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(mlx5vf_file_poll(&f), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM);
	drain_prologue(&f);
	CHECK_EQ(mlx5vf_file_poll(&f), 0);
	pthread_create(&t, NULL, reader_thread, &r);
	wait_for_blocked_reader(p, 0);
	CHECK_EQ(atomic_load(&p->saves_completed), 0);
	set_hold(p, 0); /* the firmware thread completes it, under the lock */
	pthread_join(t, NULL);
	CHECK(r.result > 0, "woken reader got %ld", r.result);
	uint64_t total = 0;
	long n;
	while ((n = do_read(p, &f, r.buf, sizeof(r.buf), 0)) > 0)
		total += (uint64_t)n;
	CHECK_EQ(n, 0);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&f);
	plat_free(p);
}

static void t_blocking_read_woken_by_disable(void)
{
	struct plat *p = plat_new("sim:state=4M,object=64K-256K,seed=7", NULL, 1);
	struct mlx5vf_file f;
	struct reader r = { .p = p, .f = &f };
	pthread_t t;

	set_hold(p, 1);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	drain_prologue(&f);
	pthread_create(&t, NULL, reader_thread, &r);
	wait_for_blocked_reader(p, 0);
	/* STOP_COPY -> STOP disables the file while its SAVE is in flight */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	pthread_join(t, NULL);
	CHECK_EQ(r.result, -ENODEV);
	CHECK_EQ(mlx5vf_file_poll(&f), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM | MLX5VF_EPOLLRDHUP);
	mlx5vf_file_release(&f);
	/* the late completion frees the buffer the SAVE wrote */
	set_hold(p, 0);
	plat_free(p);
}

static void t_blocking_read_woken_by_reset(void)
{
	struct plat *p = plat_new("sim:state=4M,object=64K-256K,seed=8", NULL, 1);
	struct mlx5vf_file f;
	struct reader r = { .p = p, .f = &f };
	pthread_t t;

	set_hold(p, 1);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	drain_prologue(&f);
	pthread_create(&t, NULL, reader_thread, &r);
	wait_for_blocked_reader(p, 0);
	mlx5vf_sim_reset_vf(p->sim, 0);
	mlx5vf_reset_done(&p->dev); /* lock free: the reset runs now */
	pthread_join(t, NULL);
	CHECK_EQ(r.result, -ENODEV);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	mlx5vf_file_release(&f);
	set_hold(p, 0);
	plat_free(p);
}

static void t_nonblocking_eagain(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=9", NULL, 0);
	struct mlx5vf_file f;
	uint8_t buf[4096];
	size_t done = 7;

	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	drain_prologue(&f);
	CHECK_EQ(mlx5vf_file_read(&f, buf, sizeof(buf), MLX5VF_IO_NONBLOCK, &done), -EAGAIN);
	CHECK_EQ(done, 0);
	CHECK_EQ(mlx5vf_file_poll(&f), 0);
	CHECK(complete_one(p), "SAVE");
	CHECK_EQ(mlx5vf_file_poll(&f), MLX5VF_EPOLLIN | MLX5VF_EPOLLRDNORM);
	CHECK_EQ(mlx5vf_file_read(&f, buf, sizeof(buf), MLX5VF_IO_NONBLOCK, &done), 0);
	CHECK_EQ(done, sizeof(buf));
	CHECK_EQ(mlx5vf_file_read(&f, buf, 0, MLX5VF_IO_NONBLOCK, &done), 0);
	CHECK_EQ(done, 0);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&f);
	plat_free(p);
}

static void t_espipe(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=10", NULL, 0);
	struct mlx5vf_file sf, df;
	uint8_t buf[64] = { 0 };
	size_t done = 3;

	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(mlx5vf_file_read(&sf, buf, sizeof(buf), MLX5VF_IO_POSITIONED, &done), -ESPIPE);
	CHECK_EQ(done, 0);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&sf);
	CHECK_EQ(set_state(p, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(mlx5vf_file_write(&df, buf, sizeof(buf),
				   MLX5VF_IO_POSITIONED | MLX5VF_IO_NONBLOCK, &done),
		 -ESPIPE);
	/* nothing written: the stream is empty and RESUMING -> STOP passes */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&df);
	while (complete_one(p))
		;
	plat_free(p);
}

/* Leaving PRE_COPY waits for the SAVE in flight, then for the cleanup SAVE:
 * MLX5VF_RETRY twice, each ended by a completion. */
static void t_set_state_retry(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=13", NULL, 0);
	struct mlx5vf_file f;
	uint32_t seq;

	CHECK_EQ(set_state(p, MLX5VF_STATE_PRE_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	mlx5vf_lock(&p->dev);
	seq = mlx5vf_events(&p->dev);
	CHECK_EQ(mlx5vf_set_state(&p->dev, MLX5VF_STATE_RUNNING, &f), MLX5VF_RETRY);
	CHECK_EQ(mlx5vf_events(&p->dev), seq); /* nothing happened yet */
	mlx5vf_unlock(&p->dev);
	CHECK(complete_one(p), "initial SAVE");
	CHECK(mlx5vf_events(&p->dev) != seq, "a completion moves the counter");
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_set_state(&p->dev, MLX5VF_STATE_RUNNING, &f), MLX5VF_RETRY); /* cleanup */
	mlx5vf_unlock(&p->dev);
	CHECK(complete_one(p), "cleanup SAVE");
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_set_state(&p->dev, MLX5VF_STATE_RUNNING, &f), 0);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	uint8_t b;
	CHECK_EQ(do_read(p, &f, &b, 1, 0), -ENODEV);
	mlx5vf_file_release(&f);

	/* the helper's loop does the same by itself */
	p->set_state_retries = 0;
	CHECK_EQ(set_state(p, MLX5VF_STATE_PRE_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	CHECK(p->set_state_retries >= 1, "no retry");
	CHECK_EQ(get_state(p), MLX5VF_STATE_STOP);
	mlx5vf_file_release(&f);
	while (complete_one(p))
		;
	plat_free(p);
}

static void t_deferred_reset(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=14", NULL, 0);
	struct mlx5vf_file f;
	uint8_t b;

	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	mlx5vf_lock(&p->dev); /* someone holds the state lock ... */
	uint32_t seq = mlx5vf_events(&p->dev);
	mlx5vf_sim_reset_vf(p->sim, 0); /* the FLR */
	mlx5vf_reset_done(&p->dev);     /* ... so the reset is deferred */
	uint32_t st;
	CHECK_EQ(mlx5vf_get_state(&p->dev, &st), 0);
	CHECK_EQ(st, MLX5VF_STATE_STOP_COPY);
	CHECK_EQ(mlx5vf_events(&p->dev), seq);
	mlx5vf_unlock(&p->dev); /* the holder's unlock runs it */
	CHECK(mlx5vf_events(&p->dev) != seq, "the reset woke nobody");
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	CHECK_EQ(do_read(p, &f, &b, 1, 0), -ENODEV);
	mlx5vf_file_release(&f);
	/* the lock is free: an immediate reset */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_sim_reset_vf(p->sim, 0);
	mlx5vf_reset_done(&p->dev);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	while (complete_one(p))
		;
	plat_free(p);
}

static int busy_reader(struct plat *p);

static struct mlx5vf_file *busy_file;
static int busy_rc;

static int busy_reader(struct plat *p)
{
	uint8_t b[8];
	size_t done;
	p->on_copy = NULL;
	busy_rc = mlx5vf_file_read(busy_file, b, sizeof(b), 0, &done);
	return 0;
}

/* A header of a record the stream parser must refuse. */
static void record_header(uint8_t h[16], uint64_t size, uint32_t flags, uint32_t tag)
{
	for (int i = 0; i < 8; i++)
		h[i] = (uint8_t)(size >> (8 * i));
	for (int i = 0; i < 4; i++) {
		h[8 + i] = (uint8_t)(flags >> (8 * i));
		h[12 + i] = (uint8_t)(tag >> (8 * i));
	}
}

/* Every errno of the header's table not covered by a test of its own. */
static void t_errno_table(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=15", NULL, 0);
	struct mlx5vf_file f, g;
	struct mlx5vf_precopy_info info;
	uint8_t buf[4096], h[16];
	size_t done;
	uint64_t size;
	memset(&g, 0, sizeof(g));

	/* EINVAL: states the graph refuses; the state stays */
	CHECK_EQ(set_state(p, MLX5VF_STATE_ERROR, NULL), -EINVAL);
	CHECK_EQ(set_state(p, 8, NULL), -EINVAL);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(set_state(p, MLX5VF_STATE_PRE_COPY, NULL), -EINVAL);
	CHECK_EQ(get_state(p), MLX5VF_STATE_STOP_COPY);
	mlx5vf_lock(&p->dev);
	CHECK_EQ(mlx5vf_set_state(&p->dev, MLX5VF_STATE_STOP, NULL), -EINVAL);
	CHECK_EQ(mlx5vf_save_complete(&p->dev, 0xdeadbeef, 0, buf, 16), -EINVAL); /* stale */
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(mlx5vf_file_write(&f, buf, 1, 0, &done), -EINVAL); /* a saving file */
	CHECK_EQ(mlx5vf_file_read(&f, buf, 1, 0, NULL), -EINVAL);

	/* ENOTTY / EINVAL / EFAULT of the precopy ioctl, in Linux's order */
	memset(&info, 0, sizeof(info));
	info.argsz = sizeof(info);
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO + 1, &info), -ENOTTY);
	info.argsz = 23;
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO, &info), -EINVAL);
	info.argsz = 24;
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO, &info), -EINVAL); /* STOP_COPY */
	p->copy_budget = 0;
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO, &info), -EFAULT);
	p->copy_budget = -1;

	/* EFAULT on the first byte; a later fault returns the bytes so far */
	CHECK(complete_one(p), "SAVE");
	p->copy_budget = 0;
	CHECK_EQ(mlx5vf_file_read(&f, buf, sizeof(buf), 0, &done), -EFAULT);
	CHECK_EQ(done, 0);
	p->copy_budget = 100;
	CHECK_EQ(mlx5vf_file_read(&f, buf, sizeof(buf), 0, &done), 0);
	CHECK_EQ(done, 100);
	p->copy_budget = -1;

	/* EBUSY: a second reader while the first copies (lock dropped) */
	busy_file = &f;
	busy_rc = 1;
	p->on_copy = busy_reader;
	CHECK(do_read(p, &f, buf, sizeof(buf), 0) > 0, "first reader");
	CHECK_EQ(busy_rc, -EBUSY);
	/* EBUSY: fini while a file is live */
	CHECK_EQ(mlx5vf_device_fini(&p->dev), -EBUSY);

	/* ENODEV: close_device disables the file */
	mlx5vf_lock(&p->dev);
	mlx5vf_close_device(&p->dev);
	mlx5vf_sim_reset_vf(p->sim, 0); /* vfio_pci_core resets the function on open */
	mlx5vf_open_device(&p->dev);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);
	CHECK_EQ(do_read(p, &f, buf, 1, 0), -ENODEV);
	CHECK_EQ(mlx5vf_file_ioctl(&f, MLX5VF_MIG_GET_PRECOPY_INFO, &info), -EINVAL);
	mlx5vf_file_release(&f);
	CHECK_EQ(do_read(p, &f, buf, 1, 0), -ENODEV); /* released */
	while (complete_one(p))
		;

	/* ENOMEM: the platform's allocation fails; nothing is left behind */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	p->fail_alloc_after = 0;
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), -ENOMEM);
	CHECK_EQ(get_state(p), MLX5VF_STATE_STOP);
	CHECK_EQ(p->live_bufs, 0);

	/* ETIMEDOUT passes through; another errno reads back as EIO */
	p->exec_errno = -ETIMEDOUT;
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -ETIMEDOUT);
	p->exec_errno = -EPIPE;
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -EIO);
	/* firmware statuses, as Linux's cmd_status_to_err() maps them */
	mlx5vf_sim_fail_nth(p->sim, 0x116, 1, 0x01); /* RESUME_VHCA: INT_ERR */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -EIO);
	mlx5vf_sim_fail_nth(p->sim, 0x116, 1, 0x03); /* BAD_PARAM */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -EINVAL);
	mlx5vf_sim_fail_nth(p->sim, 0x116, 1, 0x06); /* RES_BUSY */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -EBUSY);
	mlx5vf_sim_fail_nth(p->sim, 0x116, 1, 0x08); /* LIM */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -ENOMEM);
	mlx5vf_sim_fail_nth(p->sim, 0x116, 1, 0x0f); /* NO_RES */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -EAGAIN);
	CHECK_EQ(get_state(p), MLX5VF_STATE_STOP);

	/* EOPNOTSUPP: a record with an unknown mandatory tag */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RESUMING, &g), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(mlx5vf_file_read(&g, buf, 1, 0, &done), -EINVAL); /* a resuming file */
	CHECK_EQ(mlx5vf_file_ioctl(&g, MLX5VF_MIG_GET_PRECOPY_INFO, &info), -ENOTTY);
	record_header(h, 8, 0, 0x1234);
	CHECK_EQ(do_write(p, &g, h, sizeof(h), 0), -EOPNOTSUPP);
	CHECK_EQ(do_write(p, &g, h, sizeof(h), 0), -ENODEV); /* failed for good */
	/* leaving RESUMING with a failed stream fails, with the stream's errno */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), -EOPNOTSUPP);
	CHECK_EQ(get_state(p), MLX5VF_STATE_RESUMING);
	mlx5vf_file_release(&g);
	mlx5vf_sim_reset_vf(p->sim, 0);
	mlx5vf_reset_done(&p->dev); /* the only way out of a failed RESUMING */
	CHECK_EQ(get_state(p), MLX5VF_STATE_RUNNING);

	/* ENOMEM: a record larger than a LOAD can take */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RESUMING, &g), MLX5VF_NEW_RESUMING_FILE);
	record_header(h, 1ull << 32, 0, 0);
	CHECK_EQ(do_write(p, &g, h, sizeof(h), 0), -ENOMEM);
	mlx5vf_file_release(&g);
	mlx5vf_sim_reset_vf(p->sim, 0);
	mlx5vf_reset_done(&p->dev);

	/* EINVAL: RESUMING -> STOP in the middle of a record */
	CHECK_EQ(set_state(p, MLX5VF_STATE_RESUMING, &g), MLX5VF_NEW_RESUMING_FILE);
	record_header(h, 8, 1, 0x7777); /* optional: fine ... */
	CHECK_EQ(do_write(p, &g, h, 10, 0), 10); /* ... but cut short */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), -EINVAL);
	CHECK_EQ(do_write(p, &g, h + 10, 6, 0), 6);
	CHECK_EQ(do_write(p, &g, buf, 8, 0), 8); /* its payload, skipped */
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&g);

	/* ENOTCONN: the PF disabled the VF */
	mlx5vf_sim_detach_vf(p->sim, 0, true);
	mlx5vf_lock(&p->dev);
	mlx5vf_vf_detach(&p->dev);
	CHECK_EQ(mlx5vf_get_data_size(&p->dev, &size), -ENOTCONN);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), -ENOTCONN);
	mlx5vf_sim_detach_vf(p->sim, 0, false);
	mlx5vf_lock(&p->dev);
	mlx5vf_vf_attach(&p->dev);
	mlx5vf_unlock(&p->dev);
	CHECK_EQ(set_state(p, MLX5VF_STATE_RUNNING, NULL), 0);
	plat_free(p);
}

/* Detach while a reader waits: woken, ENODEV; nothing leaks. */
static void t_detach_wakes_reader(void)
{
	struct plat *p = plat_new("sim:state=4M,seed=16", NULL, 1);
	struct mlx5vf_file f;
	struct reader r = { .p = p, .f = &f };
	pthread_t t;

	set_hold(p, 1);
	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	drain_prologue(&f);
	pthread_create(&t, NULL, reader_thread, &r);
	wait_for_blocked_reader(p, 0);
	mlx5vf_lock(&p->dev);
	mlx5vf_vf_detach(&p->dev);
	mlx5vf_unlock(&p->dev);
	pthread_join(t, NULL);
	CHECK_EQ(r.result, -ENODEV);
	mlx5vf_file_release(&f);
	set_hold(p, 0);
	mlx5vf_lock(&p->dev);
	mlx5vf_vf_attach(&p->dev);
	mlx5vf_unlock(&p->dev);
	plat_free(p);
}

/* A LOAD due while a SAVE of the same device is still in flight (its saving
 * file closed just before RESUMING): the write reports what it consumed, the
 * next one waits (MLX5VF_RETRY, or -EAGAIN non-blocking) for the completion. */
static void t_write_waits_for_save(void)
{
	struct mlx5vf_config cfg = small_chunks(1 << 20);
	struct plat *src = plat_new("sim:state=3M,object=64K-256K,seed=31", &cfg, 1);
	struct plat *dst = plat_new("sim:state=1M,seed=32", &cfg, 0);
	struct mlx5vf_file sf, df, tmp;
	size_t cap = 8 << 20, len = 0, done = 0;
	uint8_t *stream = malloc(cap);
	long n;

	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP_COPY, &sf), MLX5VF_NEW_SAVING_FILE);
	while ((n = do_read(src, &sf, stream + len, cap - len, 0)) > 0)
		len += (size_t)n;
	CHECK_EQ(n, 0);
	CHECK_EQ(set_state(src, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&sf);

	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP_COPY, &tmp), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0); /* its SAVE still runs */
	mlx5vf_file_release(&tmp);
	CHECK_EQ(dst->q_len, 1);
	CHECK_EQ(set_state(dst, MLX5VF_STATE_RESUMING, &df), MLX5VF_NEW_RESUMING_FILE);
	CHECK_EQ(mlx5vf_file_write(&df, stream, len, 0, &done), 0);
	CHECK(done > 0 && done < len, "first write consumed %zu of %zu", done, len);
	size_t off = done;
	CHECK_EQ(mlx5vf_file_write(&df, stream + off, len - off, MLX5VF_IO_NONBLOCK, &done),
		 -EAGAIN);
	CHECK_EQ(done, 0);
	uint32_t seq = mlx5vf_events(&dst->dev);
	CHECK_EQ(mlx5vf_file_write(&df, stream + off, len - off, 0, &done), MLX5VF_RETRY);
	CHECK(complete_one(dst), "the old SAVE");
	CHECK(mlx5vf_events(&dst->dev) != seq, "the completion moved the counter");
	CHECK_EQ(write_all(dst, &df, stream + off, len - off), (long)(len - off));
	CHECK_EQ(set_state(dst, MLX5VF_STATE_STOP, NULL), 0);
	mlx5vf_file_release(&df);
	CHECK(digests_equal(src, dst), "digest after the delayed LOAD");
	free(stream);
	plat_free(src);
	plat_free(dst);
}

/* fini: -EBUSY with a live file, MLX5VF_RETRY while a SAVE is in flight. */
static void t_fini_waits_for_save(void)
{
	struct plat *p = plat_new("sim:state=2M,seed=17", NULL, 0);
	struct mlx5vf_file f;

	CHECK_EQ(set_state(p, MLX5VF_STATE_STOP_COPY, &f), MLX5VF_NEW_SAVING_FILE);
	CHECK_EQ(mlx5vf_device_fini(&p->dev), -EBUSY);
	mlx5vf_file_release(&f);
	CHECK_EQ(mlx5vf_device_fini(&p->dev), MLX5VF_RETRY);
	CHECK(p->live_bufs > 0, "the SAVE's buffer must stay until it completes");
	CHECK(complete_one(p), "SAVE");
	CHECK_EQ(mlx5vf_device_fini(&p->dev), 0);
	CHECK_EQ(p->live_bufs, 0);
	CHECK(mlx5vf_sim_idle(p->sim), "firmware resources left");
	uint32_t st;
	CHECK_EQ(mlx5vf_get_state(&p->dev, &st), -EINVAL); /* dead */
	mlx5vf_sim_free(p->sim);
	free(p);
}

/* ------------------------------------------------------------------------ */

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "abi_layout", t_abi_layout },
	{ "stale_header_refused", t_stale_header_refused },
	{ "next_state", t_next_state },
	{ "roundtrip_chunked", t_roundtrip_chunked },
	{ "roundtrip_legacy", t_roundtrip_legacy },
	{ "measured_chunks", t_measured_chunks },
	{ "roundtrip_async_load", t_roundtrip_async_load },
	{ "roundtrip_short_copies", t_roundtrip_short_copies },
	{ "precopy", t_precopy },
	{ "enomsg_first_segment_only", t_enomsg_first_segment_only },
	{ "blocking_read_woken_by_completion", t_blocking_read_woken_by_completion },
	{ "blocking_read_woken_by_disable", t_blocking_read_woken_by_disable },
	{ "blocking_read_woken_by_reset", t_blocking_read_woken_by_reset },
	{ "nonblocking_eagain", t_nonblocking_eagain },
	{ "espipe", t_espipe },
	{ "set_state_retry", t_set_state_retry },
	{ "deferred_reset", t_deferred_reset },
	{ "errno_table", t_errno_table },
	{ "detach_wakes_reader", t_detach_wakes_reader },
	{ "write_waits_for_save", t_write_waits_for_save },
	{ "fini_waits_for_save", t_fini_waits_for_save },
};

#define NTESTS (sizeof(tests) / sizeof(tests[0]))

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;

	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t i = 0; i < NTESTS; i++)
			puts(tests[i].name);
		return 0;
	}
	alarm(120); /* a hang fails the run instead of stalling CI */
	for (size_t i = 0; i < NTESTS; i++) {
		int selected = argc == 1;
		for (int a = 1; a < argc; a++)
			selected |= !strcmp(argv[a], tests[i].name);
		if (!selected)
			continue;
		int before = failures;
		tests[i].fn();
		if (failures == before) {
			passed++;
			printf("ok   %s\n", tests[i].name);
		} else {
			failed++;
			printf("FAIL %s\n", tests[i].name);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed || !passed ? 1 : 0;
}
