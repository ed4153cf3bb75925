/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * mlx5vf.h - the mlx5 VF live-migration driver logic (Linux's mlx5-vfio-pci
 * migration path, chunk mode included) as a static library with a C ABI.
 *
 * A C driver (e.g. a vfio_pci_core variant driver) links libmlx5vf_linux.a
 * and gets the whole migration logic with the kernel's file semantics. It
 * provides:
 *   - the PLATFORM: a table of callbacks (struct mlx5vf_platform_ops) that
 *     run firmware commands, start the asynchronous SAVE, allocate / DMA-map
 *     (pages -> MTT mkey) / unmap / free buffers, compute CRC-32C, copy
 *     between buffers and user memory, and give the library the device lock;
 *   - STORAGE: struct mlx5vf_device (per VF) and struct mlx5vf_file (per
 *     migration file), embedded in its own structures. The library never
 *     allocates.
 * It calls:
 *   - device functions, mirroring vfio_migration_ops and the driver's hooks:
 *     mlx5vf_device_init (inline: checks the ABI)/probe/fini, mlx5vf_set_state, mlx5vf_get_state,
 *     mlx5vf_get_data_size, mlx5vf_migration_flags, mlx5vf_reset_done,
 *     mlx5vf_vf_detach/attach, mlx5vf_open_device/close_device, and
 *     mlx5vf_save_complete / mlx5vf_load_complete from the SAVE's (LOAD's)
 *     completion work item;
 *   - file functions, mirroring the data fd's file_operations:
 *     mlx5vf_file_read/write/poll/ioctl/release.
 *
 * RETURN VALUES
 *   0 = success; < 0 = a negative errno, exactly as Linux's mlx5-vfio-pci
 *   returns it in that situation; > 0 = a protocol code: MLX5VF_RETRY
 *   (wait, then call again), MLX5VF_NEW_SAVING_FILE /
 *   MLX5VF_NEW_RESUMING_FILE (mlx5vf_set_state opened a file). Byte counts
 *   come back through a `size_t *done` argument, never the return value.
 *   Check MLX5VF_RETRY before treating a value as an error.
 *
 * ERRNO NUMBERS are the asm-generic ones (x86, arm64, riscv, ...), from the
 *   core's errno table. alpha, mips, parisc and sparc number some of them
 *   differently: the static assertions at the end of this header compare
 *   them with <linux/errno.h> (<errno.h> outside the kernel) and fail the
 *   build there rather than misreport. The same holds for
 *   VFIO_MIG_GET_PRECOPY_INFO (_IO() differs on powerpc, mips, sparc).
 *
 * ------------------------------------------------------------------------
 * LOCKING CONTRACT
 *
 * The DEVICE LOCK is the driver's per-VF state mutex (Linux's
 * mvdev->state_mutex), handed to the library as ops->lock / ->trylock /
 * ->unlock. It protects everything in struct mlx5vf_device.
 *
 * (L) Call with the device lock held (the caller serialises these, as the
 *     kernel's state mutex does):
 *       mlx5vf_device_probe, mlx5vf_device_probe_info, mlx5vf_set_state,
 *       mlx5vf_get_state, mlx5vf_get_data_size, mlx5vf_vf_detach,
 *       mlx5vf_vf_attach, mlx5vf_close_device, mlx5vf_open_device,
 *       mlx5vf_save_complete, mlx5vf_load_complete (from a work item,
 *       never hard-irq/atomic context: they take a sleeping lock and call
 *       back into the platform).
 * (S) Take the lock themselves - call WITHOUT it (as the VFS calls fops):
 *       mlx5vf_file_read, mlx5vf_file_write, mlx5vf_file_poll,
 *       mlx5vf_file_ioctl, mlx5vf_file_release, mlx5vf_device_fini.
 * (-) No lock needed:
 *       mlx5vf_device_init (before the device is shared), mlx5vf_events,
 *       mlx5vf_migration_flags, mlx5vf_file_kind, mlx5vf_reset_done (never
 *       sleeps: it only trylocks), mlx5vf_lock, mlx5vf_unlock (lock held),
 *       mlx5vf_config_default, mlx5vf_mig_next_state, mlx5vf_crc32c and the
 *       mkey helpers.
 *
 * RELEASE THE LOCK ONLY WITH mlx5vf_unlock(): it first runs a reset that
 * mlx5vf_reset_done() deferred (Linux's mlx5vf_state_mutex_unlock()).
 * Taking it with mlx5vf_lock() or your own mutex_lock() is equivalent.
 *
 * What runs concurrently: mlx5vf_file_read() drops the lock around every
 * copy to user memory (buffer_to_user / copy_to_user), mirroring the core's
 * read lease: while one reader copies a segment (and may fault and sleep),
 * the SAVE completion, set_state, the precopy ioctl, a reset, ... all run;
 * a file closed meanwhile keeps the segment's buffer until the copy ends.
 * Readers of ONE file must be serialised by the caller (a per-file mutex,
 * Linux's migf->lock): a second concurrent reader gets -EBUSY. Writes copy
 * from user memory with the lock held (as Linux's resume write holds the
 * state mutex); the deferred reset is what makes that safe.
 *
 * Callbacks are called with the lock held, except: lock/trylock; the copy
 * callbacks of mlx5vf_file_read (lock dropped) and copy_from_user /
 * copy_to_user of mlx5vf_file_ioctl (outside the lock). A callback must not
 * call back into the library (the lock is not recursive), except
 * mlx5vf_events, mlx5vf_crc32c and the mkey helpers; the copies
 * mlx5vf_file_read makes without the lock may call anything a lock-free
 * caller may. Every entry point may sleep (it calls callbacks that may)
 * except mlx5vf_reset_done, mlx5vf_events, mlx5vf_migration_flags and
 * mlx5vf_file_kind.
 *
 * LIFETIMES: struct mlx5vf_device must not move after init and must outlive
 * its files: mlx5vf_device_fini() returns -EBUSY while a file is live (not
 * yet released). A struct mlx5vf_file must not be copied once in use.
 *
 * ------------------------------------------------------------------------
 * THE WAIT / RETRY PROTOCOL
 *
 * The library never sleeps. Where Linux's driver waits for the SAVE in
 * flight (suspending the VHCA, the incremental query, leaving PRE_COPY, a
 * LOAD while a SAVE runs) or a blocking reader waits for data, the call
 * returns MLX5VF_RETRY having changed nothing the retry would repeat. The
 * caller waits for the library's EVENT COUNTER to move, then calls again
 * with the same arguments. The counter moves, and ops->wake runs, whenever
 * a waiter may progress: a SAVE completion, an arc, a reset, a detach, a
 * close. Read the counter BEFORE the call, so an event between the call and
 * the wait is not lost:
 *
 *     mlx5vf_lock(&vf->mig);                      // (L) calls
 *     for (;;) {
 *             u32 seq = mlx5vf_events(&vf->mig);
 *             ret = mlx5vf_set_state(&vf->mig, new_state, &migf->mf);
 *             if (ret != MLX5VF_RETRY)
 *                     break;
 *             mlx5vf_unlock(&vf->mig);            // the completion needs it
 *             if (wait_event_interruptible(vf->wq,
 *                             mlx5vf_events(&vf->mig) != seq))
 *                     return ERR_PTR(-ERESTARTSYS);   // state as reached
 *             mlx5vf_lock(&vf->mig);
 *     }
 *
 *     for (;;) {                                  // (S) calls: no lock held
 *             u32 seq = mlx5vf_events(&vf->mig);
 *             ret = mlx5vf_file_read(&migf->mf, buf, len,
 *                                    flags, &done);
 *             if (ret != MLX5VF_RETRY)
 *                     break;
 *             if (wait_event_interruptible(vf->wq,
 *                             mlx5vf_events(&vf->mig) != seq))
 *                     return -ERESTARTSYS;
 *     }
 *     return ret ? ret : done;
 *
 * ops->wake must wake the queue you wait on with wake_up_all() (it also
 * serves poll_wait()), and must not take the device lock (it runs under it).
 * A wait may end spuriously; the retry then returns MLX5VF_RETRY again.
 * Functions that may return MLX5VF_RETRY: mlx5vf_set_state (L),
 * mlx5vf_file_read and mlx5vf_file_write without MLX5VF_IO_NONBLOCK,
 * mlx5vf_file_ioctl, mlx5vf_device_fini (S).
 *
 * DEFERRED RESET: call mlx5vf_reset_done() from pci_error_handlers
 * .reset_done without the lock. If the lock is free the reset runs at once
 * (state RUNNING, both files disabled: readers get -ENODEV); if it is held,
 * it runs when the holder calls mlx5vf_unlock(). A mlx5vf_set_state loop
 * that waits (lock dropped) may see the reset in between: its next call
 * walks from RUNNING.
 *
 * ------------------------------------------------------------------------
 * ERRNO TABLE (negated on return)
 *
 *   ENOMSG     read: PRE_COPY / PRE_COPY_P2P and nothing queued and no SAVE
 *              in flight, on the first segment of the read only (a read
 *              that drains the queue returns its bytes).
 *   EAGAIN     read with MLX5VF_IO_NONBLOCK and no data yet; write with
 *              MLX5VF_IO_NONBLOCK while a LOAD waits for a SAVE; firmware
 *              status NO_RES.
 *   ENODEV     a file disabled (its arc ended it, reset, close_device,
 *              detach) or failed (read, write, ioctl); a released file;
 *              set_state / get_data_size / probe_info before a probe.
 *   ESPIPE     read / write with MLX5VF_IO_POSITIONED (pos != NULL).
 *   EINVAL     set_state: an unknown, ERROR or unsupported target, a target
 *              the graph cannot reach (STOP_COPY -> PRE_COPY), RESUMING ->
 *              STOP with an incomplete stream (cut inside a record, or
 *              without the end record its stream-info promised; a stream
 *              that FAILED returns the errno it failed with); ioctl: argsz
 *              < 24, device not in PRE_COPY / PRE_COPY_P2P; mig_next_state;
 *              save_complete with a stale token; read on a resuming file,
 *              write on a saving file; NULL arguments, a bad config or ops
 *              table, storage that is not a live device; firmware statuses
 *              BAD_OP, BAD_PARAM, BAD_RES, BAD_RES_STATE, ...
 *   ENOTTY     ioctl: cmd != MLX5VF_MIG_GET_PRECOPY_INFO, or a resuming file.
 *   EOPNOTSUPP probe: the VF cannot migrate (PF migration cap, VF
 *              migratable); write: a record with an unknown mandatory tag.
 *   ENOMEM     a platform allocation failed (alloc_buffer -ENOMEM); a
 *              fixed table is full; firmware asks for a SAVE buffer above
 *              max_save_buffer; write: a record above 2^32-1 bytes (or
 *              max_image); firmware status LIM.
 *   EIO        firmware INT_ERR / BAD_SYS_STATE / length errors, or an
 *              output that does not decode; a platform callback error other
 *              than ENOMEM / ETIMEDOUT / ENOTCONN / EFAULT; leaving
 *              PRE_COPY (-> RUNNING / RUNNING_P2P) after the saving file
 *              failed; write: a stream whose integrity record mismatches.
 *   ENOTCONN   the VF is detached (mlx5vf_vf_detach): every VF command.
 *   EFAULT     read / write / ioctl: the copy of the first byte failed (a
 *              copy callback returned 0 bytes or -EFAULT); later faults
 *              return the bytes moved so far.
 *   ETIMEDOUT  a callback returned -ETIMEDOUT (firmware did not answer).
 *   EPROTO     device_init: the caller was built with another version of
 *              this header than the library's (MLX5VF_ABI_VERSION or a
 *              structure size differs); nothing was initialised.
 *   EBUSY      read: another read of the same file is in progress;
 *              fini: files are still live; firmware RES_BUSY.
 *   (EPERM, EBADR and EREMOTEIO are in the core's vocabulary, with
 *   MLX5VF_E* constants, but no path returns them today.)
 *
 * ------------------------------------------------------------------------
 * WIRING INTO A vfio_pci_core VARIANT DRIVER (sketch)
 *
 *   struct my_vf {                      // vfio_alloc_device() container
 *           struct vfio_pci_core_device core;
 *           struct mutex state_mutex;   // ops->lock/trylock/unlock
 *           wait_queue_head_t wq;       // ops->wake: wake_up_all(&wq)
 *           struct mlx5vf_device mig;
 *   };
 *   struct my_migf {                    // filp->private_data
 *           struct my_vf *vf;           // + a device reference
 *           struct mutex read_lock;     // serialises readers
 *           struct mlx5vf_file mf;
 *   };
 *
 *   .init:  mlx5vf_device_init(&vf->mig, &my_platform_ops, vf, NULL);
 *           lock; mlx5vf_device_probe(&vf->mig, vf_index, scratch,
 *           MLX5VF_PROBE_SCRATCH_LEN); unlock; then
 *           vdev->migration_flags = mlx5vf_migration_flags(&vf->mig) and
 *           vdev->mig_ops = &my_mig_ops (on -EOPNOTSUPP: no migration).
 *   .migration_set_state: the loop above around mlx5vf_set_state(); on
 *           MLX5VF_NEW_SAVING_FILE anon_inode_getfile(.., &save_fops, migf,
 *           O_RDONLY) + stream_open(); on MLX5VF_NEW_RESUMING_FILE the same
 *           with resume_fops, O_WRONLY; return NULL on 0, ERR_PTR on < 0.
 *           Allocate the migf before the call, free it if no file opened.
 *           If the file cannot be created: unlock, mlx5vf_file_release().
 *   .migration_get_state / .migration_get_data_size: lock; call; unlock.
 *   .open_device / .close_device: lock; mlx5vf_open_device() /
 *           mlx5vf_close_device(); unlock (around vfio_pci_core's own).
 *   .release: mlx5vf_device_fini() until it returns 0 (wait on
 *           MLX5VF_RETRY as above).
 *   save_fops: .read (the loop above; flags MLX5VF_IO_NONBLOCK from
 *           O_NONBLOCK, MLX5VF_IO_POSITIONED if pos), .poll (poll_wait()
 *           on vf->wq, then mlx5vf_file_poll()), .unlocked_ioctl (retry
 *           loop around mlx5vf_file_ioctl(&migf->mf, cmd, (void *)arg)),
 *           .release (mlx5vf_file_release(), then free the migf).
 *   resume_fops: .write (retry loop around mlx5vf_file_write()), .release.
 *   pci_error_handlers.reset_done: mlx5vf_reset_done(&vf->mig).
 *   PF notifier: lock; mlx5vf_vf_detach() / mlx5vf_vf_attach(); unlock.
 *   ops->start_save: mlx5_cmd_exec_cb() with the token in your async
 *           context; its callback queues a work item that does lock;
 *           mlx5vf_save_complete(dev, token, status, out, sizeof(out));
 *           unlock.
 *   ops->start_load (optional; NULL LOADs through ops->exec): the same
 *           with mlx5vf_load_complete(), so image k+1 arrives while
 *           image k LOADs; writes and RESUMING -> STOP then return
 *           MLX5VF_RETRY while both image buffers wait for LOADs.
 */


#ifndef MLX5VF_H
#define MLX5VF_H

/* Generated by cbindgen from shim-linux/src; do not edit (see shim-linux/cbindgen.toml). */

#if defined(__KERNEL__)
#include <linux/types.h>
#include <linux/errno.h>
#else
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#endif

/*
 * User-memory pointers (file read/write/ioctl buffers, the copy callbacks'
 * user side) carry the kernel's __user address space, so sparse (make C=1)
 * flags a dereference or a kernel pointer passed in their place. Outside
 * the kernel __user means nothing.
 */
#ifndef __user
#define __user
#endif
typedef void __user *mlx5vf_uptr;
typedef const void __user *mlx5vf_const_uptr;


/**
 * Wait, then call again: a SAVE is in flight (or, for a blocking read, no
 * data is queued yet). Read `mlx5vf_events()` *before* the call, drop the
 * device lock if you hold it, sleep until `mlx5vf_events()` differs from
 * what you read, then repeat the call with the same arguments.
 */
#define MLX5VF_RETRY 1

/**
 * `mlx5vf_set_state()` reached the target and opened a saving (read-only)
 * file in the caller's `struct mlx5vf_file`.
 */
#define MLX5VF_NEW_SAVING_FILE 2

/**
 * `mlx5vf_set_state()` reached the target and opened a resuming
 * (write-only) file in the caller's `struct mlx5vf_file`.
 */
#define MLX5VF_NEW_RESUMING_FILE 3

/**
 * `mlx5vf_file_kind()`: a saving file.
 */
#define MLX5VF_FILE_SAVING 1

/**
 * `mlx5vf_file_kind()`: a resuming file.
 */
#define MLX5VF_FILE_RESUMING 2

/**
 * The file was opened `O_NONBLOCK`: never return `MLX5VF_RETRY` from a
 * read or write, return `-EAGAIN` instead.
 */
#define MLX5VF_IO_NONBLOCK (1 << 0)

/**
 * The VFS passed a position (`pread`/`pwrite`, `pos != NULL` in the
 * `file_operations` callback): migration files are streams, `-ESPIPE`.
 */
#define MLX5VF_IO_POSITIONED (1 << 1)

/**
 * `EPOLLIN`.
 */
#define MLX5VF_EPOLLIN 1

/**
 * `EPOLLOUT`.
 */
#define MLX5VF_EPOLLOUT 4

/**
 * `EPOLLRDNORM`.
 */
#define MLX5VF_EPOLLRDNORM 64

/**
 * `EPOLLWRNORM`.
 */
#define MLX5VF_EPOLLWRNORM 256

/**
 * `EPOLLRDHUP`.
 */
#define MLX5VF_EPOLLRDHUP 8192

/**
 * `VFIO_MIG_GET_PRECOPY_INFO` = `_IO(';', 121)` on asm-generic
 * architectures (x86, arm64, riscv). On powerpc, mips and sparc `_IO` adds
 * `0x20000000`: the header's trailer fails the build there (see its
 * static assertions), so translate `cmd` before calling
 * `mlx5vf_file_ioctl()` if you ever port to one of them.
 */
#define MLX5VF_MIG_GET_PRECOPY_INFO 15225

/**
 * `offsetofend(struct vfio_precopy_info, dirty_bytes)`: the smallest
 * `argsz` the precopy ioctl accepts, and the bytes it reads and writes.
 */
#define MLX5VF_PRECOPY_INFO_MINSZ 24

/**
 * `VFIO_MIGRATION_STOP_COPY`.
 */
#define MLX5VF_MIGRATION_STOP_COPY (1 << 0)

/**
 * `VFIO_MIGRATION_P2P`.
 */
#define MLX5VF_MIGRATION_P2P (1 << 1)

/**
 * `VFIO_MIGRATION_PRE_COPY`.
 */
#define MLX5VF_MIGRATION_PRE_COPY (1 << 2)

/**
 * `VFIO_DEVICE_STATE_ERROR`.
 */
#define MLX5VF_STATE_ERROR 0

/**
 * `VFIO_DEVICE_STATE_STOP`.
 */
#define MLX5VF_STATE_STOP 1

/**
 * `VFIO_DEVICE_STATE_RUNNING`.
 */
#define MLX5VF_STATE_RUNNING 2

/**
 * `VFIO_DEVICE_STATE_STOP_COPY`.
 */
#define MLX5VF_STATE_STOP_COPY 3

/**
 * `VFIO_DEVICE_STATE_RESUMING`.
 */
#define MLX5VF_STATE_RESUMING 4

/**
 * `VFIO_DEVICE_STATE_RUNNING_P2P`.
 */
#define MLX5VF_STATE_RUNNING_P2P 5

/**
 * `VFIO_DEVICE_STATE_PRE_COPY`.
 */
#define MLX5VF_STATE_PRE_COPY 6

/**
 * `VFIO_DEVICE_STATE_PRE_COPY_P2P`.
 */
#define MLX5VF_STATE_PRE_COPY_P2P 7

/**
 * The device reads the buffer (LOAD): `DMA_TO_DEVICE`.
 */
#define MLX5VF_DMA_TO_DEVICE 1

/**
 * The device writes the buffer (SAVE): `DMA_FROM_DEVICE`.
 */
#define MLX5VF_DMA_FROM_DEVICE 2

/**
 * Bytes per buffer page; buffers are whole pages.
 */
#define MLX5VF_PAGE_SIZE 4096

/**
 * Scratch `mlx5vf_device_probe()` needs (QUERY_HCA_CAP's output).
 */
#define MLX5VF_PROBE_SCRATCH_LEN 4112

/**
 * Bytes of the producer name in `struct mlx5vf_config`.
 */
#define MLX5VF_PRODUCER_LEN 32

/**
 * Output bytes the platform must provide for an asynchronous SAVE
 * (`save_vhca_state_out`) and pass to `mlx5vf_save_complete()`.
 */
#define MLX5VF_SAVE_OUT_LEN 16

/**
 * Output bytes of CREATE_MKEY.
 */
#define MLX5VF_CREATE_MKEY_OUT_LEN 16

/**
 * Input bytes of DESTROY_MKEY.
 */
#define MLX5VF_DESTROY_MKEY_IN_LEN 16

/**
 * Output bytes of DESTROY_MKEY.
 */
#define MLX5VF_DESTROY_MKEY_OUT_LEN 16

/**
 * Bytes of `struct mlx5vf_device` (64-bit targets).
 */
#define MLX5VF_DEVICE_SIZE 4608

/**
 * Alignment of `struct mlx5vf_device`.
 */
#define MLX5VF_DEVICE_ALIGN 8

/**
 * `MLX5VF_DEVICE_SIZE` in 64-bit words (the storage array's length).
 */
#define MLX5VF_DEVICE_WORDS 576

/**
 * Bytes of `struct mlx5vf_file` (64-bit targets).
 */
#define MLX5VF_FILE_SIZE 16

/**
 * Alignment of `struct mlx5vf_file`.
 */
#define MLX5VF_FILE_ALIGN 8

/**
 * `MLX5VF_FILE_SIZE` in 64-bit words (the storage array's length).
 */
#define MLX5VF_FILE_WORDS 2

/**
 * Bytes of `struct mlx5vf_dirty` (64-bit targets): the tracker plan of up
 * to 256 ranges and its state.
 */
#define MLX5VF_DIRTY_SIZE 4352

/**
 * Alignment of `struct mlx5vf_dirty`.
 */
#define MLX5VF_DIRTY_ALIGN 8

/**
 * `MLX5VF_DIRTY_SIZE` in 64-bit words (the storage array's length).
 */
#define MLX5VF_DIRTY_WORDS 544

/**
 * Scratch `mlx5vf_log_start()` needs: QUERY_HCA_CAP's output or CREATE's
 * input with 255 ranges, whichever is larger.
 */
#define MLX5VF_DIRTY_SCRATCH_LEN 4144

/**
 * Bytes of a report CQE the `report_next` callback copies out.
 */
#define MLX5VF_REPORT_CQE_LEN 64

/**
 * The next CQE was copied out and consumed.
 */
#define MLX5VF_REPORT_CQE 0

/**
 * An OBJECT_CHANGE event for a page tracker arrived.
 */
#define MLX5VF_REPORT_OBJECT_CHANGED 1

/**
 * A CQ or WQ error event on the channel.
 */
#define MLX5VF_REPORT_CHANNEL_ERROR 2

/**
 * Nothing arrived within the timeout.
 */
#define MLX5VF_REPORT_TIMED_OUT 3

/**
 * `EPERM`.
 */
#define MLX5VF_EPERM 1

/**
 * `EIO`.
 */
#define MLX5VF_EIO 5

/**
 * `EAGAIN`.
 */
#define MLX5VF_EAGAIN 11

/**
 * `ENOMEM`.
 */
#define MLX5VF_ENOMEM 12

/**
 * `EFAULT`.
 */
#define MLX5VF_EFAULT 14

/**
 * `EBUSY`.
 */
#define MLX5VF_EBUSY 16

/**
 * `ENODEV`.
 */
#define MLX5VF_ENODEV 19

/**
 * `EINVAL`.
 */
#define MLX5VF_EINVAL 22

/**
 * `ENOTTY`.
 */
#define MLX5VF_ENOTTY 25

/**
 * `ESPIPE`.
 */
#define MLX5VF_ESPIPE 29

/**
 * `ENOMSG`.
 */
#define MLX5VF_ENOMSG 42

/**
 * `EBADR`.
 */
#define MLX5VF_EBADR 53

/**
 * `EPROTO`.
 */
#define MLX5VF_EPROTO 71

/**
 * `EOPNOTSUPP`.
 */
#define MLX5VF_EOPNOTSUPP 95

/**
 * `ENOTCONN`.
 */
#define MLX5VF_ENOTCONN 107

/**
 * `ETIMEDOUT`.
 */
#define MLX5VF_ETIMEDOUT 110

/**
 * `EREMOTEIO`.
 */
#define MLX5VF_EREMOTEIO 121

/**
 * The version of this header's ABI: bumped whenever a structure, a
 * function signature or a constant's meaning changes. A caller built with
 * another version's header is refused at init (`-EPROTO`) instead of
 * handing the library structures it would misread.
 */
#define MLX5VF_ABI_VERSION 4

/**
 * `struct mlx5vf_config.flags`: use chunk mode when the device offers it.
 */
#define MLX5VF_CFG_CHUNKS (1 << 0)

/**
 * `struct mlx5vf_config.flags`: offer PRE_COPY when the device supports it.
 */
#define MLX5VF_CFG_PRECOPY (1 << 1)

/**
 * `struct mlx5vf_config.flags`: write the stream-info and stream-end
 * records (optional records Linux skips; the destination then proves the
 * stream arrived whole). Without it the stream is exactly what Linux writes.
 */
#define MLX5VF_CFG_INTEGRITY (1 << 2)

/**
 * `mlx5vf_config.flags`: account PRE_COPY as the Linux driver does (one
 * chunk per precopy-info call; `dirty_bytes` is the next chunk's size).
 * Off (the default): chunked PRE_COPY saves whole images through the
 * chunk slots and reports what firmware still holds.
 */
#define MLX5VF_CFG_LINUX_PRECOPY (1 << 3)

/**
 * `mlx5vf_config.flags`: tune the chunk size to the firmware's measured
 * SAVE fixed cost and rate, within `memory_cap` bytes of chunk
 * buffers per side (on by default). Needs the optional `now_ns` callback;
 * without it, or without this flag, `chunk_size` stays.
 */
#define MLX5VF_CFG_MEASURED_CHUNKS (1 << 4)

/**
 * `struct mlx5vf_probe_info.flags`: saving uses chunk mode.
 */
#define MLX5VF_PROBE_CHUNK_MODE (1 << 0)

/**
 * `struct mlx5vf_probe_info.flags`: device dirty-page tracking exists.
 */
#define MLX5VF_PROBE_DIRTY_TRACKING (1 << 1)

#if defined(MLX5VF_TEST_SIM)
/**
 * A simulated PF (opaque to C).
 */
struct mlx5vf_sim;
#endif

/**
 * Driver policy for `mlx5vf_device_init()`; `mlx5vf_config_default()` fills
 * the Linux policy.
 */
struct mlx5vf_config {
        /**
         * Chunk buffer size saving starts with (Linux: 8 MiB). At least one
         * page, at most `2^32 - 4096`.
         */
        uint64_t chunk_size;
        /**
         * Cap on any SAVE buffer (at most and by default `2^32 - 4096`).
         */
        uint64_t max_save_buffer;
        /**
         * Largest image a resuming file accepts (at most and by default
         * `2^32 - 1`, LOAD's size field).
         */
        uint64_t max_image;
        /**
         * Cap on how much of the incoming STOP_COPY_SIZE hint a resuming file
         * allocates up front (default 64 MiB).
         */
        uint64_t max_hint;
        /**
         * With `MLX5VF_CFG_MEASURED_CHUNKS`: chunk buffer memory per side the
         * tuned chunk size stays within (default 64 MiB; 0: the default).
         */
        uint64_t memory_cap;
        /**
         * Chunk buffers in flight or unread at once (Linux: 2; 1 to 8).
         */
        uint32_t chunk_slots;
        /**
         * `MLX5VF_CFG_*` bits (default: chunks, PRE_COPY, integrity).
         */
        uint32_t flags;
        /**
         * Producer named in the stream-info record (NUL padded).
         */
        uint8_t producer[MLX5VF_PRODUCER_LEN];
};

/**
 * Storage for one device (one migratable VF). Embed it in your device
 * structure or allocate `MLX5VF_DEVICE_SIZE` bytes aligned to
 * `MLX5VF_DEVICE_ALIGN`; initialise it with `mlx5vf_device_init()` and
 * never copy or move it afterwards. Opaque: no field is for the caller.
 */
struct mlx5vf_device {
        /**
         * Opaque.
         */
        uint64_t _opaque[MLX5VF_DEVICE_WORDS];
};

/**
 * The platform: the `Hal` of the core, as C callbacks. Every callback gets
 * the `ctx` given to `mlx5vf_device_init()` first. All are required
 * (`mlx5vf_device_init()` refuses a table with a `NULL` entry).
 *
 * Callbacks returning `int` return 0 or a negative errno; the core keeps
 * `-ENOMEM`, `-ETIMEDOUT`, `-ENOTCONN` and `-EFAULT` and reports anything
 * else as `-EIO`. The copy callbacks return the bytes copied (a short count
 * is allowed) or a negative errno.
 *
 * Callbacks run with the device lock held, except the four copy callbacks
 * when `mlx5vf_file_read()` calls them (it drops the lock around the copy)
 * and `lock`/`trylock` themselves.
 */
struct mlx5vf_platform_ops {
        /**
         * Runs one firmware command synchronously (`mlx5_cmd_do()`): `in_len`
         * bytes of `input`, `out_len` bytes of `out` filled. Return 0 whenever
         * firmware answered, *even with a bad status* (the core decodes status
         * and syndrome from `out`); a negative errno only when the command was
         * not executed.
         */
        int (*exec)(void *ctx, const void *input, size_t in_len, void *out, size_t out_len);
        /**
         * Starts SAVE_VHCA_STATE (`input`, `in_len` bytes; copy them if needed
         * after returning) asynchronously
         * (`mlx5_cmd_exec_cb()` into a `MLX5VF_SAVE_OUT_LEN`-byte output the
         * platform owns). Its completion must later reach
         * `mlx5vf_save_complete()` with `token`, exactly once, from a context
         * that can take the device lock (a work item). Return 0 if started; on
         * an error nothing may complete.
         */
        int (*start_save)(void *ctx, const void *input, size_t in_len, uint64_t token);
        /**
         * Allocates a buffer of `npages` (never 0) pages of `MLX5VF_PAGE_SIZE`
         * for DMA direction `dir` (`MLX5VF_DMA_*`) and stores a non-zero handle
         * of the platform's choosing in `*buffer`.
         */
        int (*alloc_buffer)(void *ctx, uint32_t npages, uint32_t dir, uint64_t *buffer);
        /**
         * Makes `count` buffers, in order, one device-visible range starting at
         * virtual address 0: DMA-map their pages, then CREATE_MKEY in MTT mode
         * under protection domain `pd` (see `mlx5vf_encode_create_mkey()`), and
         * store the key in `*mkey`. On an error nothing stays mapped.
         */
        int (*map_buffers)(void *ctx,
                           uint32_t pd,
                           const uint64_t *buffers,
                           size_t count,
                           uint32_t *mkey);
        /**
         * Undoes `map_buffers`: DESTROY_MKEY `mkey`, then DMA-unmap the buffers.
         * Unmap even if DESTROY_MKEY failed; a non-zero return is only counted
         * as a leaked key.
         */
        int (*unmap_buffers)(void *ctx, uint32_t mkey, const uint64_t *buffers, size_t count);
        /**
         * Frees an (unmapped) buffer.
         */
        void (*free_buffer)(void *ctx, uint64_t buffer);
        /**
         * Continues the standard CRC-32C `crc` (initial value and final XOR
         * `0xffffffff` already applied) over `len` bytes of `buffer` from
         * `offset`. With the kernel's raw `crc32c()`:
         * `~crc32c(~crc, bytes, len)`; `mlx5vf_crc32c()` is a portable one.
         */
        uint32_t (*crc32c)(void *ctx, uint64_t buffer, uint64_t offset, uint64_t len, uint32_t crc);
        /**
         * Copies `len` bytes of `buffer` from `offset` to the reader's memory
         * `user_dst` (`copy_to_user()` page by page). Returns bytes copied
         * (short on a fault) or a negative errno.
         */
        int64_t (*buffer_to_user)(void *ctx,
                                  mlx5vf_uptr user_dst,
                                  uint64_t buffer,
                                  uint64_t offset,
                                  size_t len);
        /**
         * Copies `len` bytes from the writer's memory `user_src` into `buffer`
         * at `offset` (`copy_from_user()` page by page). Returns bytes copied
         * (short on a fault) or a negative errno.
         */
        int64_t (*buffer_from_user)(void *ctx,
                                    uint64_t buffer,
                                    uint64_t offset,
                                    mlx5vf_const_uptr user_src,
                                    size_t len);
        /**
         * `copy_to_user(user_dst, src, len)` from kernel memory `src` (record
         * headers, the precopy-info reply). Returns bytes copied or a negative
         * errno.
         */
        int64_t (*copy_to_user)(void *ctx, mlx5vf_uptr user_dst, const void *src, size_t len);
        /**
         * `copy_from_user(dst, user_src, len)` into kernel memory `dst`.
         * Returns bytes copied or a negative errno.
         */
        int64_t (*copy_from_user)(void *ctx, void *dst, mlx5vf_const_uptr user_src, size_t len);
        /**
         * Takes the device lock (the VFIO state mutex: `mutex_lock()`).
         */
        void (*lock)(void *ctx);
        /**
         * Tries to take the device lock without sleeping (`mutex_trylock()`);
         * `true` if taken.
         */
        bool (*trylock)(void *ctx);
        /**
         * Releases the device lock (a plain `mutex_unlock()`: the deferred-reset
         * handling is done by `mlx5vf_unlock()`, which calls this).
         */
        void (*unlock)(void *ctx);
        /**
         * Wakes every waiter (`wake_up_all()` on the queue readers and
         * `MLX5VF_RETRY` loops sleep on); called with the device lock held,
         * after `mlx5vf_events()` moved.
         */
        void (*wake)(void *ctx);
        /**
         * OPTIONAL (may be `NULL`: LOADs then run synchronously through
         * `exec`). Starts LOAD_VHCA_STATE (`input`, `in_len` bytes; copy them if
         * needed after returning) asynchronously, so the next image arrives
         * while firmware LOADs this one. Its completion must later reach
         * `mlx5vf_load_complete()` with `token`, exactly once, from a context
         * that can take the device lock (a work item), even if the file closed
         * meanwhile. Return 0 if started; on an error nothing may complete.
         */
        int (*start_load)(void *ctx, const void *input, size_t in_len, uint64_t token);
        /**
         * OPTIONAL (may be `NULL`: nothing is measured and `chunk_size`
         * stays). A monotonic clock in nanoseconds (`ktime_get_ns()`), with
         * which the core times SAVEs to tune the chunk size
         * (`MLX5VF_CFG_MEASURED_CHUNKS`). Called with the device lock held.
         */
        uint64_t (*now_ns)(void *ctx);
        /**
         * Optional (device dirty tracking; `NULL`: `mlx5vf_log_start()` answers
         * `-EOPNOTSUPP`). Builds the page tracker's reporting channel on the
         * PF: a CQ and two loopback RC QPs (the host QP receive-only with
         * `slots` posted receive WQEs of `msg_size` bytes under one MTT mkey;
         * the firmware QP with a zero-length RQ), connected, and subscribes to
         * OBJECT_CHANGE and CQ/WQ error events. Writes the firmware QP number
         * to `fw_qpn`. Returns 0, `-EOPNOTSUPP` for "no channel here", or a
         * negative errno with nothing left allocated. **Lock held.**
         */
        int (*report_open)(void *ctx, uint32_t msg_size, uint32_t slots, uint32_t *fw_qpn);
        /**
         * Copies the next valid CQE (`MLX5VF_REPORT_CQE_LEN` bytes, owner bit
         * and invalid opcode already judged) to `cqe` and consumes it, or waits
         * up to `timeout_ns` (arming the CQ) for one or for an event. Returns
         * `MLX5VF_REPORT_*` or a negative errno. **Lock held** (Linux also
         * sleeps here with its state mutex held).
         */
        int (*report_next)(void *ctx, uint8_t *cqe, uint64_t timeout_ns);
        /**
         * Copies `len` bytes of the message in receive slot `slot` from byte
         * `offset` to `dst`. Returns 0 or a negative errno. **Lock held.**
         */
        int (*report_read)(void *ctx, uint32_t slot, uint32_t offset, uint8_t *dst, size_t len);
        /**
         * Re-posts receive slot `slot` (its WQE and the RQ doorbell record).
         * Returns 0 or a negative errno. **Lock held.**
         */
        int (*report_repost)(void *ctx, uint32_t slot);
        /**
         * Tears the channel down (after the tracker object is destroyed).
         * **Lock held.**
         */
        void (*report_close)(void *ctx);
};

/**
 * What the caller's header says about the ABI, checked by
 * `mlx5vf_device_init_abi()` against the library's own view. The header's
 * `mlx5vf_device_init()` (an inline wrapper) fills it from `sizeof` of the
 * structures as the caller was compiled, so a stale header linked against
 * a newer library (or the reverse) fails at init with `-EPROTO`.
 */
struct mlx5vf_abi {
        /**
         * `MLX5VF_ABI_VERSION` of the caller's header.
         */
        uint32_t version;
        /**
         * `sizeof(struct mlx5vf_device)`.
         */
        uint32_t device_size;
        /**
         * `sizeof(struct mlx5vf_file)`.
         */
        uint32_t file_size;
        /**
         * `sizeof(struct mlx5vf_config)`.
         */
        uint32_t config_size;
        /**
         * `sizeof(struct mlx5vf_probe_info)`.
         */
        uint32_t probe_info_size;
        /**
         * `sizeof(struct mlx5vf_platform_ops)`.
         */
        uint32_t ops_size;
};

/**
 * What `mlx5vf_device_probe()` found.
 */
struct mlx5vf_probe_info {
        /**
         * `MLX5VF_MIGRATION_*` flags to advertise (`vdev->migration_flags`).
         */
        uint64_t migration_flags;
        /**
         * VF index (0-based) on the PF.
         */
        uint16_t vf;
        /**
         * The VF's VHCA id.
         */
        uint16_t vhca_id;
        /**
         * `MLX5VF_PROBE_*` bits.
         */
        uint32_t flags;
};

/**
 * Storage for one migration file (the handle `mlx5vf_set_state()` fills
 * when it opens one). Embed it in your per-file structure (the one your
 * `struct file`'s `private_data` points to). Opaque; may be copied only
 * before it is used.
 */
struct mlx5vf_file {
        /**
         * Opaque.
         */
        uint64_t _opaque[MLX5VF_FILE_WORDS];
};

/**
 * Storage for one device's dirty-page tracker (`vfio_log_ops` state).
 * Embed it beside the device storage; initialise it with
 * `mlx5vf_dirty_init()`. Opaque; never copy or move it once initialised.
 */
struct mlx5vf_dirty {
        /**
         * Opaque.
         */
        uint64_t _opaque[MLX5VF_DIRTY_WORDS];
};

/**
 * One range to track: `struct vfio_device_feature_dma_logging_range`'s
 * layout (what the VFIO core's interval tree nodes hold as
 * `[start, last]`: pass `length = last - start + 1`).
 */
struct mlx5vf_iova_range {
        /**
         * First byte.
         */
        uint64_t iova;
        /**
         * Bytes.
         */
        uint64_t length;
};

/**
 * `struct vfio_precopy_info`, byte for byte.
 */
struct mlx5vf_precopy_info {
        /**
         * Size of the caller's structure (at least `MLX5VF_PRECOPY_INFO_MINSZ`).
         */
        uint32_t argsz;
        /**
         * Echoed back unchanged (precopy-info v1 semantics).
         */
        uint32_t flags;
        /**
         * Bytes of the initial image not yet read.
         */
        uint64_t initial_bytes;
        /**
         * Bytes of later changes: unread queued bytes plus what firmware holds.
         */
        uint64_t dirty_bytes;
};

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Fills `*cfg` with the defaults: the Linux buffer policy (8 MiB chunks, 2
 * slots), chunk mode, PRE_COPY (chunked) and the integrity records on.
 *
 * # Safety
 * `cfg` is null (nothing happens) or valid for writing a `struct
 * mlx5vf_config`.
 */
void mlx5vf_config_default(struct mlx5vf_config *cfg);

/**
 * Initialises device storage in place: no lock is needed (nothing else can
 * use it yet). `ops` is copied (it need not outlive the call); `ctx` is
 * passed to every callback; `config` may be `NULL` for the defaults. The
 * device starts RUNNING and unprobed; call `mlx5vf_device_probe()`.
 *
 * Call it through the header's `mlx5vf_device_init()`, which passes `abi`
 * as the caller's header describes the ABI.
 *
 * Returns 0; `-EPROTO` when `abi` is `NULL` or differs from this library's
 * (the caller was built with another version's header: nothing was
 * touched); `-EINVAL` for a `NULL` `dev`/`ops`, a `NULL` callback or a
 * configuration out of range.
 *
 * # Safety
 * `dev` points to `MLX5VF_DEVICE_SIZE` writable bytes aligned to
 * `MLX5VF_DEVICE_ALIGN` that nothing else uses, and that are not a live
 * device (re-initialising one leaks what it holds); `ops`, `config` and
 * `abi` are null or valid for reads.
 */
int mlx5vf_device_init_abi(struct mlx5vf_device *dev,
                           const struct mlx5vf_platform_ops *ops,
                           void *ctx,
                           const struct mlx5vf_config *config,
                           const struct mlx5vf_abi *abi);

/**
 * Tears a device down: closes both files (freeing their buffers) and
 * drops the device. Takes the lock itself: call it **without** the lock.
 *
 * Returns 0, `-EBUSY` while files are still live (release them first),
 * `MLX5VF_RETRY` while a SAVE is in flight (wait for its completion to be
 * delivered, then call again), `-EINVAL` for storage that is not a live
 * device. After 0 the storage may be freed once no thread is still inside
 * a call on it (flush the completion work item first: its
 * `mlx5vf_unlock()` may still be returning).
 *
 * # Safety
 * `dev` is null or points to device storage; nothing else uses the device
 * during the call (no waiter, no other entry point) except the delivery of
 * an outstanding SAVE completion.
 */
int mlx5vf_device_fini(struct mlx5vf_device *dev);

/**
 * Probes VF `vf` (0-based) of the PF: migration support, VHCA id, PRE_COPY
 * and chunk-mode capabilities. `scratch` is `scratch_len` bytes
 * (at least `MLX5VF_PROBE_SCRATCH_LEN`) the device uses during the call
 * only. The state becomes RUNNING. **Lock held** (or not yet shared).
 *
 * Returns 0, `-EOPNOTSUPP` if the VF cannot migrate (capability missing),
 * `-EINVAL` for a short or `NULL` scratch or an unknown device, or the
 * errno of the failed command.
 *
 * # Safety
 * `dev` is null or device storage; `scratch` is null or valid for
 * `scratch_len` bytes of writes.
 */
int mlx5vf_device_probe(struct mlx5vf_device *dev, uint16_t vf, void *scratch, size_t scratch_len);

/**
 * What probing found. **Lock held.** Returns 0, or `-ENODEV` before a
 * successful probe, `-EINVAL` for `NULL` arguments.
 *
 * # Safety
 * `dev` is null or device storage; `info` is null or valid for writes.
 */
int mlx5vf_device_probe_info(const struct mlx5vf_device *dev, struct mlx5vf_probe_info *info);

/**
 * The `MLX5VF_MIGRATION_*` flags to advertise (`vdev->migration_flags`);
 * 0 before a successful probe or for an unknown device. No lock needed.
 *
 * # Safety
 * `dev` is null or device storage.
 */
uint64_t mlx5vf_migration_flags(const struct mlx5vf_device *dev);

/**
 * Takes the device lock (the platform's `lock` callback). Equivalent to
 * taking your mutex directly.
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_lock(struct mlx5vf_device *dev);

/**
 * Releases the device lock, first running a reset `mlx5vf_reset_done()`
 * deferred (Linux's `mlx5vf_state_mutex_unlock()`). Every release of the
 * device lock must go through here, never a bare `mutex_unlock()`.
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage whose lock the caller
 * holds.
 */
void mlx5vf_unlock(struct mlx5vf_device *dev);

/**
 * The event counter: it moves (and the `wake` callback runs) whenever a
 * blocked reader or a `MLX5VF_RETRY` loop may make progress. Read it
 * before a call that may return `MLX5VF_RETRY`, then sleep until it
 * differs. No lock needed (an atomic load); safe in a `wait_event()`
 * condition.
 *
 * # Safety
 * `dev` is null (returns 0) or device storage.
 */
uint32_t mlx5vf_events(const struct mlx5vf_device *dev);

/**
 * VFIO `migration_set_state`: walks to `new_state` one arc at a time (the
 * arcs of `vfio_mig_get_next_state()`), issuing the firmware commands of
 * each. **Lock held.**
 *
 * Returns
 * - 0: the device is in `new_state` (the `NULL` file of Linux);
 * - `MLX5VF_NEW_SAVING_FILE` / `MLX5VF_NEW_RESUMING_FILE`: done, and
 *   `*file` now holds a new migration file (turn it into an fd; if you
 *   cannot, drop the lock and `mlx5vf_file_release()` it);
 * - `MLX5VF_RETRY`: a SAVE is in flight. Drop the lock, wait for
 *   `mlx5vf_events()` to move past the value read before the call, retake
 *   the lock and call again with the same `new_state`: the walk continues
 *   from the state reached (which `mlx5vf_get_state()` reports);
 * - a negative errno: the walk stopped at the state `mlx5vf_get_state()`
 *   reports. `-EINVAL` for an unknown, unsupported or unreachable state
 *   (e.g. STOP_COPY to PRE_COPY) or an incomplete stream when leaving
 *   RESUMING, `-EIO` when leaving PRE_COPY after its file failed,
 *   `-ENOTCONN` when detached, `-ENODEV` before probing, else the failed
 *   command's errno.
 *
 * `file` is where a new file goes: it must not be `NULL` (`-EINVAL`, even
 * for a target that opens none) and must not hold a live file.
 *
 * # Safety
 * `dev` is null or device storage; `file` is null or valid for writing a
 * `struct mlx5vf_file`.
 */
int mlx5vf_set_state(struct mlx5vf_device *dev, uint32_t new_state, struct mlx5vf_file *file);

/**
 * VFIO `migration_get_state`. **Lock held.** Returns 0, or `-EINVAL` for
 * `NULL` arguments.
 *
 * # Safety
 * `dev` is null or device storage; `state` is null or valid for writes.
 */
int mlx5vf_get_state(const struct mlx5vf_device *dev, uint32_t *state);

/**
 * VFIO `migration_get_data_size` (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`):
 * bytes the stop-copy phase will produce. Any state. **Lock held.**
 *
 * Returns 0, `-ENODEV` before probing, `-ENOTCONN` when detached, or the
 * QUERY's errno.
 *
 * # Safety
 * `dev` is null or device storage; `size` is null or valid for writes.
 */
int mlx5vf_get_data_size(struct mlx5vf_device *dev, uint64_t *size);

/**
 * The PCI reset of the VF completed (`pci_error_handlers.reset_done`).
 * Call it **without** the lock, from any context that may take a mutex
 * with `trylock`; it never sleeps. The state becomes RUNNING and both files
 * close (readers get `-ENODEV`): right now if the lock is free, otherwise
 * when its holder calls `mlx5vf_unlock()` (Linux's `deferred_reset`, which
 * avoids the ABBA between the state mutex and the reset path's locks).
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_reset_done(struct mlx5vf_device *dev);

/**
 * The PF is disabling the VF (`MLX5_PF_NOTIFY_DISABLE_VF`): both files
 * close while commands still reach firmware, then every command for the VF
 * fails with `-ENOTCONN` until `mlx5vf_vf_attach()`. **Lock held.**
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_vf_detach(struct mlx5vf_device *dev);

/**
 * The PF re-enabled the VF (`MLX5_PF_NOTIFY_ENABLE_VF`). **Lock held.**
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_vf_attach(struct mlx5vf_device *dev);

/**
 * VFIO `close_device`: both files close (readers get `-ENODEV`) and their
 * buffers are freed (a buffer a SAVE still writes into is freed when its
 * completion arrives). **Lock held.**
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_close_device(struct mlx5vf_device *dev);

/**
 * VFIO `open_device`: the migration state becomes RUNNING. **Lock held.**
 *
 * # Safety
 * `dev` is null (nothing happens) or device storage.
 */
void mlx5vf_open_device(struct mlx5vf_device *dev);

/**
 * Delivers the completion of the SAVE started with `token` (by
 * `start_save`). Call it from the completion's **work item, with the lock
 * held** — never from the command interface's interrupt/atomic callback.
 * `status` is 0 when firmware answered (`out` holds `out_len` bytes of
 * `save_vhca_state_out`, whatever its status byte says), or the negative
 * errno of a command that did not complete (`out` is ignored; the file
 * fails). Deliver every started SAVE exactly once, even after its file
 * closed.
 *
 * Returns 0, or `-EINVAL` for a token that names no SAVE in flight
 * (nothing changes).
 *
 * # Safety
 * `dev` is null or device storage; `out` is null or valid for `out_len`
 * bytes of reads.
 */
int mlx5vf_save_complete(struct mlx5vf_device *dev,
                         uint64_t token,
                         int status,
                         const void *out,
                         size_t out_len);

/**
 * Delivers the completion of the LOAD started with `token` (by the
 * optional `start_load`), as `mlx5vf_save_complete()` does for SAVEs: from
 * the completion's **work item, with the lock held**; `status` 0 with
 * `out`/`out_len` the `load_vhca_state_out` firmware wrote, or the negative
 * errno of a command that did not complete. A refused LOAD fails the
 * resuming file (the next write and RESUMING -> STOP report firmware's
 * status). Deliver every started LOAD exactly once, even after its file
 * closed (its memory is freed here then).
 *
 * Returns 0, or `-EINVAL` for a token that names no LOAD in flight
 * (nothing changes).
 *
 * # Safety
 * `dev` is null or device storage; `out` is null or valid for `out_len`
 * bytes of reads.
 */
int mlx5vf_load_complete(struct mlx5vf_device *dev,
                         uint64_t token,
                         int status,
                         const void *out,
                         size_t out_len);

/**
 * Initialises tracker storage (logging off). No lock needed: nothing else
 * uses the storage yet.
 *
 * Returns 0, or `-EINVAL` for `NULL`.
 *
 * # Safety
 * `d` is null or points to `MLX5VF_DIRTY_SIZE` writable bytes aligned to
 * `MLX5VF_DIRTY_ALIGN` that nothing else uses.
 */
int mlx5vf_dirty_init(struct mlx5vf_dirty *d);

/**
 * `vfio_log_ops.log_start`: tracks the VF's DMA writes to `ranges`
 * (`nranges` of them, sorted and disjoint, as the VFIO core's interval
 * tree yields them; more than the device holds are combined as Linux
 * combines them). `*page_size` is the requested page size in and the
 * tracked one out. `scratch` holds `MLX5VF_DIRTY_SCRATCH_LEN` bytes.
 * **Lock held.**
 *
 * Returns 0; `-EINVAL` (bad arguments, ranges, or logging already
 * started), `-EOPNOTSUPP` (no tracker on the device, no `report_*`
 * callbacks, or limits the device cannot meet), `-ENOTCONN`, or the errno
 * of the command that failed. Nothing stays allocated on failure.
 *
 * # Safety
 * `dev` is null or device storage; `d` null or tracker storage; `ranges`
 * valid for `nranges` reads; `page_size` null or valid for reads and
 * writes; `scratch` valid for `scratch_len` bytes of writes.
 */
int mlx5vf_log_start(struct mlx5vf_device *dev,
                     struct mlx5vf_dirty *d,
                     const struct mlx5vf_iova_range *ranges,
                     uint32_t nranges,
                     uint64_t *page_size,
                     void *scratch,
                     size_t scratch_len);

/**
 * `vfio_log_ops.log_stop`: destroys the tracker and its channel; also
 * ends the failed state a report left. Stopping when nothing runs does
 * nothing. **Lock held.**
 *
 * Returns 0, or `-EINVAL` for storage that is not a device or tracker.
 *
 * # Safety
 * As `mlx5vf_log_start()`, for `dev` and `d`.
 */
int mlx5vf_log_stop(struct mlx5vf_device *dev, struct mlx5vf_dirty *d);

/**
 * The PF is disabling the VF (`MLX5_PF_NOTIFY_DISABLE_VF`): call before
 * `mlx5vf_vf_detach()`, while commands still reach firmware. Running
 * logging ends as Linux's driver ends it then: the tracker is destroyed
 * and its channel closed; reads fail with `-ENOTCONN` while the VF is
 * detached, then with `-EIO` until `mlx5vf_log_stop()`. Does nothing when
 * logging is not running. **Lock held.**
 *
 * Returns 0, or `-EINVAL` for storage that is not a device or tracker.
 *
 * # Safety
 * As `mlx5vf_log_start()`, for `dev` and `d`.
 */
int mlx5vf_log_detach(struct mlx5vf_device *dev, struct mlx5vf_dirty *d);

/**
 * `vfio_log_ops.log_read_and_clear`: reports the pages of `[iova, iova +
 * length)` the VF wrote since the last report, by calling
 * `set_dirty(set_ctx, iova, length)` for each dirty extent (clipped to the
 * window; pass `iova_bitmap_set`'s arguments through), and clears them on
 * the device. **Lock held**; may sleep in `report_next`.
 *
 * Returns 0; `-EINVAL` (not started, or a window outside the ranges),
 * `-ENOTCONN`, `-ETIMEDOUT` (firmware went silent) or `-EIO` (the tracker
 * failed, a report broke a rule, or the channel broke). After `-EIO` or
 * `-ETIMEDOUT` logging has ended (the tracker and channel are freed) and
 * every read fails with `-EIO` until `mlx5vf_log_stop()`: the VMM must
 * take all memory as dirty.
 *
 * # Safety
 * As `mlx5vf_log_start()`, for `dev` and `d`; `set_dirty` is callable with
 * `set_ctx` for the duration of the call.
 */
int mlx5vf_log_read_and_clear(struct mlx5vf_device *dev,
                              struct mlx5vf_dirty *d,
                              uint64_t iova,
                              uint64_t length,
                              void (*set_dirty)(void *ctx, uint64_t iova, uint64_t length),
                              void *set_ctx);

/**
 * `MLX5VF_FILE_SAVING`, `MLX5VF_FILE_RESUMING`, or 0 for a file that is
 * released, zeroed or `NULL`. No lock needed.
 *
 * # Safety
 * `f` is null or a file object (zeroed or filled by `mlx5vf_set_state()`).
 */
int mlx5vf_file_kind(const struct mlx5vf_file *f);

/**
 * `read()` on a saving file: copies up to `len` stream bytes to `ubuf`
 * through `copy_to_user`/`buffer_to_user`, storing the count in `*done`.
 * **Takes the lock itself** and drops it around each copy (the core's read
 * lease keeps the buffer alive), so a SAVE completion can run meanwhile.
 * Serialise readers of one file with your own per-file mutex (Linux's
 * `migf->lock`); a second concurrent reader gets `-EBUSY`.
 *
 * `flags`: `MLX5VF_IO_NONBLOCK` for `O_NONBLOCK`, `MLX5VF_IO_POSITIONED`
 * when the VFS passed a position.
 *
 * Returns 0 with `*done` bytes (0 bytes = end of stream; `len == 0`
 * returns 0 at once), or
 * - `-ESPIPE`: a positioned read;
 * - `-ENOMSG`: PRE_COPY/PRE_COPY_P2P and nothing to read for now (only
 *   when nothing was read by this call: a read that drains the queue
 *   returns its bytes);
 * - `MLX5VF_RETRY`: blocking read and no data yet (a SAVE will bring
 *   some): wait for `mlx5vf_events()` to move past the value read before
 *   the call (`wait_event_interruptible()`; return `-ERESTARTSYS` if
 *   interrupted), then call again;
 * - `-EAGAIN`: the same with `MLX5VF_IO_NONBLOCK`;
 * - `-ENODEV`: the file was disabled (its arc ended it, reset, close,
 *   detach) or failed;
 * - `-EFAULT`: the first copy faulted (a later fault returns the bytes
 *   copied so far; the stream stays intact: only copied bytes are
 *   consumed);
 * - `-EBUSY`: another read of this file is in progress;
 * - `-EINVAL`: not a saving file, or `NULL` `done`.
 *
 * # Safety
 * `f` is null or a file object whose device is live; `ubuf` is whatever
 * the copy callbacks accept for `len` bytes (a `__user` pointer); `done`
 * is null or valid for writes.
 */
int mlx5vf_file_read(struct mlx5vf_file *f,
                     mlx5vf_uptr ubuf,
                     size_t len,
                     uint32_t flags,
                     size_t *done);

/**
 * `write()` on a resuming file: consumes up to `len` bytes of `ubuf`
 * (copied with `copy_from_user`/`buffer_from_user`), storing the count in
 * `*done`; LOADs each image as it completes. **Takes the lock itself** and
 * holds it for the whole call, copies included (as Linux holds the state
 * mutex in `mlx5vf_resume_write()`; the deferred reset is what makes that
 * safe).
 *
 * Returns 0 with `*done` bytes consumed, or
 * - `-ESPIPE`: a positioned write;
 * - `MLX5VF_RETRY`: an image is due for LOAD while a SAVE of this device
 *   is still in flight (a saving file closed just before); nothing was
 *   consumed: wait as for a read, then call again (`-EAGAIN` with
 *   `MLX5VF_IO_NONBLOCK`). If bytes were consumed first, they are
 *   reported and the next call gets `MLX5VF_RETRY`;
 * - `-ENODEV`: the file was disabled or failed earlier;
 * - `-EOPNOTSUPP`: an unknown mandatory record; `-ENOMEM`: a record larger
 *   than a LOAD can take, or buffers could not be allocated; `-EIO`: the
 *   stream failed its integrity check or a LOAD failed (firmware errnos
 *   pass through): each of these fails the file, as in Linux;
 * - `-EFAULT`: the first copy faulted (later faults return the count; the
 *   file stays usable);
 * - `-EINVAL`: not a resuming file, or `NULL` `done`.
 *
 * # Safety
 * `f` is null or a file object whose device is live; `ubuf` is whatever
 * the copy callbacks accept for `len` bytes; `done` is null or valid for
 * writes.
 */
int mlx5vf_file_write(struct mlx5vf_file *f,
                      mlx5vf_const_uptr ubuf,
                      size_t len,
                      uint32_t flags,
                      size_t *done);

/**
 * `poll()`: call `poll_wait()` on your wait queue first, then this.
 * **Takes the lock itself.** A saving file reports `MLX5VF_EPOLLIN |
 * MLX5VF_EPOLLRDNORM` when data is queued or at end of stream, plus
 * `MLX5VF_EPOLLRDHUP` once it failed or was disabled, else 0. A resuming
 * file reports what the VFS reports for a file without `poll`
 * (`EPOLLIN | EPOLLOUT | EPOLLRDNORM | EPOLLWRNORM`), as Linux's does.
 *
 * # Safety
 * `f` is null or a file object whose device is live.
 */
uint32_t mlx5vf_file_poll(struct mlx5vf_file *f);

/**
 * `unlocked_ioctl()` of a saving file: `VFIO_MIG_GET_PRECOPY_INFO` with
 * `uarg` pointing to the caller's `struct vfio_precopy_info`. **Takes the
 * lock itself** (copies happen outside it). Checks in Linux's order:
 * - `-ENOTTY`: `cmd` is not `MLX5VF_MIG_GET_PRECOPY_INFO`, or a resuming
 *   file;
 * - `-EFAULT`: the structure could not be read or written back;
 * - `-EINVAL`: `argsz < MLX5VF_PRECOPY_INFO_MINSZ`, or the device is not in
 *   PRE_COPY/PRE_COPY_P2P;
 * - `MLX5VF_RETRY`: a SAVE is in flight (in PRE_COPY the firmware's
 *   incremental size is queried, which waits for it): wait as for a read,
 *   then call again;
 * - `-ENODEV`: the file failed or was disabled; a query's errno
 *   (`-ENOTCONN` when detached, …);
 * - 0: `argsz`, `flags` echoed, `initial_bytes` and `dirty_bytes` filled
 *   (24 bytes written back). When everything queued was read and firmware
 *   holds new data, an incremental SAVE starts so the next read finds it.
 *
 * # Safety
 * `f` is null or a file object whose device is live; `uarg` is whatever
 * the copy callbacks accept for `MLX5VF_PRECOPY_INFO_MINSZ` bytes.
 */
int mlx5vf_file_ioctl(struct mlx5vf_file *f, uint32_t cmd, mlx5vf_uptr uarg);

/**
 * `release()`: the file's last reference is gone. **Takes the lock
 * itself.** The device keeps a saving file's data until an arc ends it (as
 * Linux's driver holds its own reference); the handle is dead afterwards
 * (every call on it returns `-ENODEV`, `mlx5vf_file_kind()` 0). Releasing
 * twice is harmless.
 *
 * # Safety
 * `f` is null or a file object whose device is live; no other call on it
 * runs concurrently.
 */
void mlx5vf_file_release(struct mlx5vf_file *f);

/**
 * Linux's `vfio_mig_get_next_state()`: the next state on the way from
 * `cur` to `target` for a device with migration flags `flags`, in `*next`.
 * `cur == target` gives `cur`. Returns 0, or `-EINVAL` when either state is
 * unknown, ERROR or unsupported by `flags`, or no path exists (e.g.
 * STOP_COPY to PRE_COPY; the 2026 fix, never a loop).
 *
 * # Safety
 * `next` is null (`-EINVAL`) or valid for writes.
 */
int mlx5vf_mig_next_state(uint32_t cur, uint32_t target, uint64_t flags, uint32_t *next);

/**
 * Continues the standard CRC-32C (Castagnoli; initial value and final XOR
 * `0xffffffff`) `crc` over `len` bytes at `p`: `mlx5vf_crc32c(0, "123456789",
 * 9) == 0xe3069283`, and `mlx5vf_crc32c(mlx5vf_crc32c(0, a), b)` is the CRC
 * of `a` then `b`. The kernel's raw `crc32c()` computes the same as
 * `~crc32c(~crc, p, len)`.
 *
 * # Safety
 * `p` is valid for `len` bytes of reads (or `len` is 0).
 */
uint32_t mlx5vf_crc32c(uint32_t crc, const void *p, size_t len);

/**
 * Bytes of a CREATE_MKEY input for `npages` pages (header, mkey context
 * and the MTT list rounded up to 16-byte octwords); 0 for 0 pages or more
 * than one key can describe (2^20).
 */
size_t mlx5vf_create_mkey_in_len(uint32_t npages);

/**
 * Encodes CREATE_MKEY in MTT mode into `input` (`in_len` bytes, at least
 * `mlx5vf_create_mkey_in_len(npages)`): read/write access for local and
 * remote, protection domain `pd`, start address 0, length
 * `npages * MLX5VF_PAGE_SIZE`, and the 4 KiB-aligned bus addresses
 * `pages[0..npages]` in order. Returns the input length, `-ENOMEM` for a
 * short `input`, or `-EINVAL` for a bad page count, a misaligned page or a
 * `pd` above 24 bits.
 *
 * # Safety
 * `input` is valid for `in_len` bytes of writes; `pages` for `npages`
 * reads.
 */
int64_t mlx5vf_encode_create_mkey(void *input,
                                  size_t in_len,
                                  uint32_t pd,
                                  const uint64_t *pages,
                                  uint32_t npages);

/**
 * Decodes a CREATE_MKEY output (`out_len` bytes, at least
 * `MLX5VF_CREATE_MKEY_OUT_LEN`) into the memory key to use in SAVE/LOAD
 * (`mkey_index << 8`), in `*mkey`. Returns 0, the errno of a firmware
 * status (`-EINVAL`, `-ENOMEM`, …), or `-EIO` for an unusable output.
 *
 * # Safety
 * `out` is valid for `out_len` bytes of reads; `mkey` for writes.
 */
int mlx5vf_decode_create_mkey(const void *out, size_t out_len, uint32_t *mkey);

/**
 * Encodes DESTROY_MKEY for `mkey` into `input` (`in_len` bytes, at least
 * `MLX5VF_DESTROY_MKEY_IN_LEN`). Returns the input length or `-ENOMEM`
 * for a short `input`.
 *
 * # Safety
 * `input` is valid for `in_len` bytes of writes.
 */
int mlx5vf_encode_destroy_mkey(void *input, size_t in_len, uint32_t mkey);

/**
 * Checks a DESTROY_MKEY output: 0, the errno of a firmware status, or
 * `-EIO` for an unusable output.
 *
 * # Safety
 * `out` is valid for `out_len` bytes of reads.
 */
int mlx5vf_decode_destroy_mkey(const void *out, size_t out_len);

#if defined(MLX5VF_TEST_SIM)
/**
 * A simulated PF from a device spec (`"sim:state=20M,seed=5"`); `NULL` for
 * a bad spec.
 *
 * # Safety
 * `spec` is a NUL-terminated string.
 */
struct mlx5vf_sim *mlx5vf_sim_new(const char *spec);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Frees a simulator.
 *
 * # Safety
 * `sim` is null or came from `mlx5vf_sim_new`; no call on it runs or
 * follows.
 */
void mlx5vf_sim_free(struct mlx5vf_sim *sim);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Executes one command (DMA through registered memory). Returns 0 (status
 * in `out[0]`) or `-EINVAL` (bad arguments, `out_len < 16`).
 *
 * # Safety
 * `input`/`out` are valid for `in_len`/`out_len` bytes.
 */
int mlx5vf_sim_exec(struct mlx5vf_sim *sim,
                    const void *input,
                    size_t in_len,
                    void *out,
                    size_t out_len);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Registers `len` bytes at `ptr` as device-visible memory at `iova`
 * (still to be IOMMU-mapped). Returns 0 or `-EINVAL`.
 *
 * # Safety
 * `ptr` is valid for `len` bytes until `mlx5vf_sim_mem_remove(iova)`.
 */
int mlx5vf_sim_mem_add(struct mlx5vf_sim *sim, uint64_t iova, void *ptr, size_t len);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Forgets the range registered at `iova`. Returns 0 or `-EINVAL`.
 *
 * # Safety
 * `sim` is null or live.
 */
int mlx5vf_sim_mem_remove(struct mlx5vf_sim *sim, uint64_t iova);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Maps `[iova, iova + len)` in the simulated IOMMU. Returns 0 or `-EINVAL`.
 *
 * # Safety
 * `sim` is null or live.
 */
int mlx5vf_sim_iommu_map(struct mlx5vf_sim *sim, uint64_t iova, uint64_t len);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Unmaps `[iova, iova + len)` from the simulated IOMMU. Returns 0 or
 * `-EINVAL`.
 *
 * # Safety
 * `sim` is null or live.
 */
int mlx5vf_sim_iommu_unmap(struct mlx5vf_sim *sim, uint64_t iova, uint64_t len);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * The 32-byte digest of VF `vf`'s state into `out`. Returns 0 or `-EINVAL`.
 *
 * # Safety
 * `out` is valid for 32 bytes of writes.
 */
int mlx5vf_sim_digest(struct mlx5vf_sim *sim, uint16_t vf, uint8_t *out);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Whether the firmware holds no PD, no mkey and no IOMMU mapping.
 *
 * # Safety
 * `sim` is null or live.
 */
bool mlx5vf_sim_idle(struct mlx5vf_sim *sim);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Fails the `nth` (from 1) next command of `opcode` with `status`.
 * Returns 0 or `-EINVAL`.
 *
 * # Safety
 * `sim` is null or live.
 */
int mlx5vf_sim_fail_nth(struct mlx5vf_sim *sim, uint16_t opcode, uint32_t nth, uint8_t status);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Advances VF `vf`'s guest workload (dirtying state while it runs).
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_tick(struct mlx5vf_sim *sim, uint16_t vf, uint32_t ticks);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Detaches (`on`) or re-attaches VF `vf`: while detached every command
 * addressed to it fails.
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_detach_vf(struct mlx5vf_sim *sim, uint16_t vf, bool on);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * FLR-like reset of VF `vf` (running, tracking off).
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_reset_vf(struct mlx5vf_sim *sim, uint16_t vf);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Commands of `opcode` executed so far.
 *
 * # Safety
 * `sim` is null or live.
 */
uint64_t mlx5vf_sim_command_count(struct mlx5vf_sim *sim, uint16_t opcode);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Opens the tracker model's reporting channel (standing for the CQ and
 * QPs a kernel driver creates): `slots` slots of `msg_size` bytes at
 * `slot * msg_size` of memory key `mkey`. Writes the firmware QP number to
 * `qpn`. Returns 0 or `-EINVAL` (a channel is open, or bad geometry).
 *
 * # Safety
 * `sim` is null or live; `qpn` null or valid for a write.
 */
int mlx5vf_sim_tracker_open(struct mlx5vf_sim *sim,
                            uint32_t mkey,
                            uint32_t msg_size,
                            uint32_t slots,
                            uint32_t *qpn);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Lets the firmware take one reporting step: returns `MLX5VF_REPORT_CQE`
 * with the CQE in `cqe` (64 bytes), `MLX5VF_REPORT_OBJECT_CHANGED`, or
 * `MLX5VF_REPORT_TIMED_OUT` when nothing happens (the model never changes
 * by itself, so there is nothing to wait for).
 *
 * # Safety
 * `sim` is null or live; `cqe` valid for 64 bytes of writes.
 */
int mlx5vf_sim_tracker_poll(struct mlx5vf_sim *sim, uint8_t *cqe);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * The host re-posted a receive slot.
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_tracker_repost(struct mlx5vf_sim *sim);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Closes the reporting channel.
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_tracker_close(struct mlx5vf_sim *sim);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * The tracker object's state (0 TRACKING, 1 REPORTING, 2 ERROR), or -1
 * when there is none.
 *
 * # Safety
 * `sim` is null or live.
 */
int mlx5vf_sim_tracker_state(struct mlx5vf_sim *sim);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Arms a tracker fault: `kind` 0 none, 1 ERROR with a final CQE, 2 ERROR
 * with only an object-change event, 3 silence, 4 an untracked address,
 * 5 a spurious object-change event, 6 object-change events in a loop;
 * `after` messages first.
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_tracker_fault(struct mlx5vf_sim *sim, uint32_t kind, uint64_t after);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * The guest's device writes `[iova, iova + len)` (ground truth, and the
 * tracker's dirty set inside its ranges).
 *
 * # Safety
 * `sim` is null or live.
 */
void mlx5vf_sim_guest_write(struct mlx5vf_sim *sim, uint64_t iova, uint64_t len);
#endif

#if defined(MLX5VF_TEST_SIM)
/**
 * Written guest pages inside `[iova, iova + len)` whose bit in `bitmap`
 * (`words` u64s, bit i = page `iova + i * page_size`) is clear; then
 * forgets the ground truth. `u64::MAX` for bad arguments.
 *
 * # Safety
 * `sim` is null or live; `bitmap` valid for `words` reads.
 */
uint64_t mlx5vf_sim_missed_and_clear(struct mlx5vf_sim *sim,
                                     uint64_t iova,
                                     uint64_t len,
                                     uint64_t page_size,
                                     const uint64_t *bitmap,
                                     size_t words);
#endif

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* MLX5VF_H */

#ifndef MLX5VF_H_CHECKS
#define MLX5VF_H_CHECKS
/*
 * Compile-time checks: the storage sizes, the uAPI layout, and the numbers
 * this library returns against the ones this build's headers define.
 */
#if defined(__cplusplus)
#define MLX5VF_STATIC_ASSERT(e, msg) static_assert(e, msg)
#else
#define MLX5VF_STATIC_ASSERT(e, msg) _Static_assert(e, msg)
#endif
MLX5VF_STATIC_ASSERT(sizeof(struct mlx5vf_device) == MLX5VF_DEVICE_SIZE, "mlx5vf_device size");
MLX5VF_STATIC_ASSERT(__alignof__(struct mlx5vf_device) == MLX5VF_DEVICE_ALIGN,
                     "mlx5vf_device alignment");
MLX5VF_STATIC_ASSERT(sizeof(struct mlx5vf_file) == MLX5VF_FILE_SIZE, "mlx5vf_file size");
MLX5VF_STATIC_ASSERT(__alignof__(struct mlx5vf_file) == MLX5VF_FILE_ALIGN, "mlx5vf_file alignment");
MLX5VF_STATIC_ASSERT(sizeof(struct mlx5vf_precopy_info) == MLX5VF_PRECOPY_INFO_MINSZ,
                     "struct vfio_precopy_info layout");
#if defined(EPERM)
MLX5VF_STATIC_ASSERT(EPERM == MLX5VF_EPERM, "errno numbering is not asm-generic");
#endif
#if defined(EIO)
MLX5VF_STATIC_ASSERT(EIO == MLX5VF_EIO, "errno numbering is not asm-generic");
#endif
#if defined(EAGAIN)
MLX5VF_STATIC_ASSERT(EAGAIN == MLX5VF_EAGAIN, "errno numbering is not asm-generic");
#endif
#if defined(ENOMEM)
MLX5VF_STATIC_ASSERT(ENOMEM == MLX5VF_ENOMEM, "errno numbering is not asm-generic");
#endif
#if defined(EFAULT)
MLX5VF_STATIC_ASSERT(EFAULT == MLX5VF_EFAULT, "errno numbering is not asm-generic");
#endif
#if defined(EBUSY)
MLX5VF_STATIC_ASSERT(EBUSY == MLX5VF_EBUSY, "errno numbering is not asm-generic");
#endif
#if defined(ENODEV)
MLX5VF_STATIC_ASSERT(ENODEV == MLX5VF_ENODEV, "errno numbering is not asm-generic");
#endif
#if defined(EINVAL)
MLX5VF_STATIC_ASSERT(EINVAL == MLX5VF_EINVAL, "errno numbering is not asm-generic");
#endif
#if defined(ENOTTY)
MLX5VF_STATIC_ASSERT(ENOTTY == MLX5VF_ENOTTY, "errno numbering is not asm-generic");
#endif
#if defined(ESPIPE)
MLX5VF_STATIC_ASSERT(ESPIPE == MLX5VF_ESPIPE, "errno numbering is not asm-generic");
#endif
#if defined(ENOMSG)
MLX5VF_STATIC_ASSERT(ENOMSG == MLX5VF_ENOMSG, "errno numbering is not asm-generic");
#endif
#if defined(EPROTO)
MLX5VF_STATIC_ASSERT(EPROTO == MLX5VF_EPROTO, "errno numbering is not asm-generic");
#endif
#if defined(EBADR)
MLX5VF_STATIC_ASSERT(EBADR == MLX5VF_EBADR, "errno numbering is not asm-generic");
#endif
#if defined(EOPNOTSUPP)
MLX5VF_STATIC_ASSERT(EOPNOTSUPP == MLX5VF_EOPNOTSUPP, "errno numbering is not asm-generic");
#endif
#if defined(ENOTCONN)
MLX5VF_STATIC_ASSERT(ENOTCONN == MLX5VF_ENOTCONN, "errno numbering is not asm-generic");
#endif
#if defined(ETIMEDOUT)
MLX5VF_STATIC_ASSERT(ETIMEDOUT == MLX5VF_ETIMEDOUT, "errno numbering is not asm-generic");
#endif
#if defined(EREMOTEIO)
MLX5VF_STATIC_ASSERT(EREMOTEIO == MLX5VF_EREMOTEIO, "errno numbering is not asm-generic");
#endif
#if defined(VFIO_MIG_GET_PRECOPY_INFO)
MLX5VF_STATIC_ASSERT(VFIO_MIG_GET_PRECOPY_INFO == MLX5VF_MIG_GET_PRECOPY_INFO,
                     "_IO() numbering is not asm-generic: translate the ioctl cmd");
#endif
#if defined(EPOLLRDHUP) && defined(__KERNEL__)
MLX5VF_STATIC_ASSERT((unsigned int)EPOLLIN == MLX5VF_EPOLLIN, "EPOLLIN");
MLX5VF_STATIC_ASSERT((unsigned int)EPOLLRDNORM == MLX5VF_EPOLLRDNORM, "EPOLLRDNORM");
MLX5VF_STATIC_ASSERT((unsigned int)EPOLLRDHUP == MLX5VF_EPOLLRDHUP, "EPOLLRDHUP");
#endif

/*
 * mlx5vf_device_init() - see mlx5vf_device_init_abi(). Inline, so the ABI
 * it reports is the one THIS header describes, as the caller was compiled:
 * a stale header linked against a newer library (or the reverse) makes init
 * fail with -EPROTO instead of handing over structures the library would
 * misread.
 */
static inline int mlx5vf_device_init(struct mlx5vf_device *dev,
                                     const struct mlx5vf_platform_ops *ops, void *ctx,
                                     const struct mlx5vf_config *config)
{
        const struct mlx5vf_abi abi = {
                MLX5VF_ABI_VERSION,
                (uint32_t)sizeof(struct mlx5vf_device),
                (uint32_t)sizeof(struct mlx5vf_file),
                (uint32_t)sizeof(struct mlx5vf_config),
                (uint32_t)sizeof(struct mlx5vf_probe_info),
                (uint32_t)sizeof(struct mlx5vf_platform_ops),
        };
        return mlx5vf_device_init_abi(dev, ops, ctx, config, &abi);
}
#endif  /* MLX5VF_H_CHECKS */
