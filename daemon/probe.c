/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <blkid.h>
#include <fcntl.h>

#include "log.h"
#include "probe.h"
#include "util.h"

/* What libblkid may tell us; everything else it reports is ignored. */
static const char *const wanted[] = {
        "TYPE", "SEC_TYPE", "UUID", "UUID_SUB", "LABEL", "VERSION", "USAGE",
        "PTTYPE", "PTUUID", "PART_ENTRY_UUID", "PART_ENTRY_NUMBER", "PART_ENTRY_TYPE",
};

int probe_content_fd(int fd, bool skip_zfs, struct observation *o) {
        blkid_probe pr;
        int r;

        pr = blkid_new_probe();
        if (!pr) {
                r = -ENOMEM;
                goto fail;
        }
        r = blkid_probe_set_device(pr, fd, 0, 0);
        if (r < 0) {
                blkid_free_probe(pr);
                r = -EIO;
                goto fail;
        }
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID |
                                                      BLKID_SUBLKS_TYPE | BLKID_SUBLKS_SECTYPE |
                                                      BLKID_SUBLKS_USAGE | BLKID_SUBLKS_VERSION);
        blkid_probe_enable_partitions(pr, 1);
        blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
        if (skip_zfs) {
                /* The ZFS prober reads all four 256 KiB labels of every device, two thirds
                 * of all a probe reads; the caller has seen that no label can be there. */
                char *no_zfs[] = { (char *) "zfs_member", NULL };
                blkid_probe_filter_superblocks_type(pr, BLKID_FLTR_NOTIN, no_zfs);
        }

        /* 0: found, 1: nothing, -2: ambiguous (two signatures, refuse to guess, as
         * blkid -p does), -1: error. */
        r = blkid_do_safeprobe(pr);
        if (r == -2)
                observation_set(o, "X:probe_ambiguous", "1");
        if (r == 0) {
                for (size_t i = 0; i < ELEMENTSOF(wanted); i++) {
                        const char *v;
                        size_t len;
                        char k[16];
                        if (blkid_probe_lookup_value(pr, wanted[i], &v, &len) == 0) {
                                snprintf(k, sizeof(k), "B:%s", wanted[i]);
                                observation_set(o, k, v);
                        }
                }
        }
        blkid_free_probe(pr);
        if (r == -1) {
                r = -EIO;
                goto fail;
        }
        observation_set(o, "X:probed", "blkid");
        return 0;
fail:
        observation_set(o, "X:probe_error", strerror(-r));
        return r;
}

int probe_content(const char *devnode, struct observation *o) {
        _cleanup_close_ int fd = -1;

        /* O_NONBLOCK: removable media without a medium fail at once instead of waiting. */
        fd = open(devnode, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0) {
                observation_set(o, "X:probe_error", strerror(errno));
                return -errno;
        }
        return probe_content_fd(fd, false, o);
}
