"""stage2: per-app isolation and exec — rootfs, mounts, cgroups, capabilities, seccomp, users."""
