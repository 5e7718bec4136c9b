/* SPDX-License-Identifier: MIT */
/*
 * vmqd's persistent state: the definitions of persistent machines and
 * channels, saved as <state_dir>/state.json and restored when vmqd starts.
 *
 * Saving is atomic (temp file, fsync, rename, fsync of the directory): a
 * crash at any point leaves either the old or the new file.  A file that
 * cannot be understood is moved aside, never deleted, so nothing the
 * administrator had is silently lost.
 *
 * No D-Bus and no logging here: errors come back as negative errno plus,
 * where useful, a message for the daemon to log.
 *
 * The file:
 *
 *   {
 *     "version": 1,
 *     "machines": [
 *       { "name": "rx", "image": "echo",
 *         "uuid": "0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60",
 *         "memory": 16777216, "vcpus": 1, "queue_depth": 64,
 *         "huge_memory": 0, "args": null, "autostart": false }
 *     ],
 *     "channels": [
 *       { "end_a": "host", "end_b": "rx", "depth": 256,
 *         "mode": "immediate", "transfer": "auto" }
 *     ]
 *   }
 *
 * Every machine key is required except huge_memory (0), args (null: none)
 * and autostart (false); every channel key is required.  A machine of the
 * libvirt backend (an adopted domain) reads instead:
 *
 *       { "name": "web", "backend": "libvirt", "domain": "web-vm",
 *         "uuid": "<the domain's UUID>", "memory": 4194304,
 *         "rx_size": 2097152, "vcpus": 1, "queue_depth": 64,
 *         "autostart": false }
 *
 * ("image" is then absent or null; "backend" absent means "kvm".)  Unknown keys make
 * the file invalid (a newer vmqd writes a new version instead), so that a
 * save never drops what an older reader did not understand.
 */
#ifndef VMQD_STATE_H
#define VMQD_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMQD_STATE_FILE "state.json"
#define VMQD_STATE_VERSION 1

struct vmqd_machine_def {
        char *name;           /* vmqd_name_is_valid() */
        char *image;          /* absolute path or installed image name; non-empty */
        char uuid[37];        /* text form, 8-4-4-4-12 hex digits; not nil, unique */
        uint64_t memory;      /* bytes, a multiple of 2 MiB, 4 MiB..1 GiB */
        uint32_t vcpus;       /* 1..8 */
        uint32_t queue_depth; /* a power of two, 4..1024 */
        uint64_t huge_memory; /* bytes of own 2 MiB frames, a multiple of 2 MiB, <= 1 GiB */
        char *args;           /* the guest's argument string (< 512 bytes), or NULL */
        bool autostart;
        /*
         * The libvirt backend ("backend": "libvirt" in the file): the name of
         * the adopted libvirt domain (< 256 bytes, no control characters), or
         * NULL for a micro-VM ("backend": "kvm", the default).  A libvirt
         * machine has no image (NULL) and no args, huge_memory 0, vcpus 1,
         * autostart false; memory is the size of its shared region (a power
         * of two, 1 MiB..1 GiB) and rx_size its receive window (a multiple
         * of 4 KiB, at least 4 KiB, at most half the region).  rx_size is 0
         * for a micro-VM.
         */
        char *domain;
        uint64_t rx_size;
        /*
         * The libvirt backend: the CID of the domain's vhost-user-vsock
         * device (3..VMQD_VSOCK_CID_MAX, no two machines alike), or 0 when
         * it has none.  Always 0 for a micro-VM.
         */
        uint32_t vsock_cid;
};

/* The largest CID vmqd gives a domain (U32_MAX is VMADDR_CID_ANY). */
#define VMQD_VSOCK_CID_MAX 0xfffffffeu

struct vmqd_channel_def {
        char *end_a, *end_b; /* machine name or "host"; different, not both "host" */
        uint32_t depth;      /* a power of two, 1..65536 */
        char *mode;          /* "immediate" | "deferred" */
        char *transfer;      /* "copy" | "flip" | "auto" */
};

struct vmqd_state {
        struct vmqd_machine_def *machines;
        size_t n_machines;
        struct vmqd_channel_def *channels;
        size_t n_channels;
};

/*
 * Loads <dir>/state.json into *ret (which need not be initialised).
 *
 * Returns 0 when loaded, and when the file is missing (empty state).
 * Returns 1 when the file is not valid (bad JSON, wrong version, wrong
 * types, invalid or duplicate names, a UUID that is nil or that two
 * machines share, bad values, not a regular file, over
 * VMQD_FILE_MAX): it has been renamed to
 * <dir>/state.json.corrupt-<UTC YYYYMMDDTHHMMSSZ> (with ".1", ".2", ...
 * appended if that name is taken; never deleted, never overwritten), and
 * *ret is an empty state.
 * Returns a negative errno on I/O errors (-EACCES, -EIO, ...), including
 * failing to move a corrupt file aside; *ret is then not touched.
 *
 * ret_moved_to and ret_error may be NULL; when not, they are always
 * written: NULL on 0; on 1 the new path and the reason (malloc()ed); on
 * failure NULL and a message saying what failed, or NULL.
 */
int vmqd_state_load(const char *dir, struct vmqd_state *ret, char **ret_moved_to, char **ret_error);

/*
 * Writes <dir>/state.json atomically: the temp file <dir>/state.json.tmp
 * (created exclusively, O_CLOEXEC, mode 0600; a stale one from a crash is
 * removed first), write, fsync, rename over state.json, fsync the directory.
 * Creates dir (0755, and its parents) if missing.  On failure the temp file
 * is removed and state.json is untouched.  -EINVAL if a definition in *s is
 * not valid.
 */
int vmqd_state_save(const char *dir, const struct vmqd_state *s);

/* Frees everything in *s and leaves it empty.  Accepts NULL. */
void vmqd_state_done(struct vmqd_state *s);

/*
 * A deep copy of *s into *ret (which need not be initialised): the daemon
 * changes a copy, saves it, and only then swaps it for the live one.
 * -ENOMEM (nothing to free then).
 */
int vmqd_state_copy(const struct vmqd_state *s, struct vmqd_state *ret);

/*
 * Helpers for the daemon.  add_* deep-copy the definition: -EINVAL if it is
 * not valid, -EEXIST if a machine of that name, UUID or vsock CID exists,
 * -ENOMEM.  remove_*: -ENOENT if there is no such definition.
 */
int vmqd_state_add_machine(struct vmqd_state *s, const struct vmqd_machine_def *d);
/* Also removes the channels that name the machine as an end. */
int vmqd_state_remove_machine(struct vmqd_state *s, const char *name);
/* NULL if there is none.  The pointer is valid until the next add/remove. */
struct vmqd_machine_def *vmqd_state_find_machine(struct vmqd_state *s, const char *name);
/* The machine whose vsock device has this CID (not 0), or NULL. */
struct vmqd_machine_def *vmqd_state_find_machine_by_vsock_cid(struct vmqd_state *s, uint32_t cid);
/* The machine with this UUID (compared without regard to case), or NULL. */
struct vmqd_machine_def *vmqd_state_find_machine_by_uuid(struct vmqd_state *s, const char *uuid);
/* Channels may repeat (two channels between the same ends are allowed). */
int vmqd_state_add_channel(struct vmqd_state *s, const struct vmqd_channel_def *d);
/* Removes the first channel with exactly these ends (in this order). */
int vmqd_state_remove_channel(struct vmqd_state *s, const char *end_a, const char *end_b);
/* The first channel with exactly these ends, or NULL. */
struct vmqd_channel_def *vmqd_state_find_channel(struct vmqd_state *s, const char *end_a,
                                                 const char *end_b);

/* 1-63 chars [A-Za-z0-9_.-], not starting with '.' or '-', not "host". */
bool vmqd_name_is_valid(const char *name);
/* 8-4-4-4-12 hexadecimal digits (either case). */
bool vmqd_uuid_is_valid(const char *uuid);
/* A valid UUID whose digits are all zero. */
bool vmqd_uuid_is_nil(const char *uuid);
/* Two UUIDs in text form are the same (case does not matter); false if
 * either is NULL. */
bool vmqd_uuid_equal(const char *a, const char *b);

/*
 * Checks one definition the way vmqd_state_load() does.  0, or -EINVAL and
 * (if ret_error is not NULL) a malloc()ed reason in *ret_error.
 */
int vmqd_machine_def_validate(const struct vmqd_machine_def *d, char **ret_error);
int vmqd_channel_def_validate(const struct vmqd_channel_def *d, char **ret_error);

/* Frees the strings of one definition and zeroes it.  Accept NULL. */
void vmqd_machine_def_done(struct vmqd_machine_def *d);
void vmqd_channel_def_done(struct vmqd_channel_def *d);

#endif /* VMQD_STATE_H */
