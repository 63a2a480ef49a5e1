#!/usr/bin/env python3
"""minicontainer: a container runtime in one file of Python (standard library + ctypes).

    sudo python3 minicontainer.py run --rootfs DIR -- sh
    sudo python3 minicontainer.py run alpine echo hello

Sections, in the order a container is born: ctypes bindings, configuration, cgroups, root
filesystem, process setup, lifecycle, image store, command line.
"""

# ==== image store (tools/pull.py writes it; run/images/rmi read it) ====
# ==== end image store ====

# ==== seccomp ====
# ==== end seccomp ====
