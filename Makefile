# minicontainer: set up, test, lint, benchmark, demo.  Run as root (sudo make ...).
# The system interpreter, as sudo's PATH finds it; `make PYTHON=...` picks another (a venv's).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
# Debian's packages only (nothing is pip-installed into the system interpreter): the runtime
# and pull.py need none of Python's; the tests need pytest and zstandard (zstd layers), lint
# flake8.
APT_PACKAGES = busybox-static docker-registry skopeo umoci runc crun podman conmon \
               docker.io containerd tini \
               zstd iproute2 uidmap slirp4netns fuse-overlayfs linux-libc-dev openssl \
               python3-pytest python3-zstandard flake8

.PHONY: setup install test test-v2 lint bench demo clean

setup:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES)

# `minicontainer` on PATH: a launcher that has the interpreter import this checkout's runtime
# as the file's shell prologue does (its bytecode cached: `python3 minicontainer.py` compiles
# the whole file at every start), without the shell in between (0.5 ms of every call);
# `minicontainer-pull`: a link to tools/pull.py.  The bytecode of both is written here, for
# users who may not write it in this checkout (pull.py compiling minicontainer.py at every
# start took 30 MiB and 80 ms more); the runtime's split by tools/bytecode.py (the functions
# a start does not call are loaded on their first call: 0.6 MiB and ~1 ms of `run`).
PREFIX ?= /usr/local
install:
	py=$$(command -v $(PYTHON)) && { \
	  printf '#!%s -IS\n' "$$py"; \
	  printf '# written by make install: the runtime in %s\n' "$(CURDIR)"; \
	  printf 'import gc, sys; gc.disable(); sys.path.insert(0, "%s")\n' "$(CURDIR)"; \
	  printf 'import minicontainer; gc.freeze(); gc.enable(); '; \
	  printf 'minicontainer.exit(minicontainer.main())\n'; \
	} > $(PREFIX)/bin/minicontainer.new
	chmod 755 $(PREFIX)/bin/minicontainer.new
	mv -f $(PREFIX)/bin/minicontainer.new $(PREFIX)/bin/minicontainer
	ln -sf $(CURDIR)/tools/pull.py $(PREFIX)/bin/minicontainer-pull
	$(PYTHON) -m compileall -q $(CURDIR)/tools
	$(PYTHON) $(CURDIR)/tools/bytecode.py $(CURDIR)/minicontainer.py

# pytest's exit 5 (no tests collected) is a failure here, as is any other non-zero exit.
test:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

# The same suite in a pure cgroup v2 Debian 12 guest (QEMU; see tools/v2guest.py), on a copy of
# this checkout, with the guest's python3.  Not run by CI.  The first run builds the guest image.
# `make test-v2 TESTS="tests/test_cgroups.py tests/test_rootless.py"`: those files only.
TESTS ?= tests
test-v2:
	$(PYTHON) tools/v2guest.py run $(CURDIR) -- python3 -m pytest -q -p no:cacheprovider -rfE $(TESTS)

# flake8 with .flake8's settings (those of ruff.toml, for whoever has ruff).
lint:
	$(PYTHON) -m flake8 minicontainer.py tools tests bench

# bench_pull.py writes some 3 GB at its peak: on tmpfs where it has room (this VM's disk
# took 4 s for GNU tar's share in one run, 16 s in another), else in bench/out; BENCH_OUT=DIR
# picks. It removes what it wrote but its image's layers (~220 MB), kept for the next run
# (make clean removes them).
BENCH_OUT ?= $(shell test "$$(df --output=avail -BG /dev/shm 2>/dev/null | tail -1 | \
	tr -dc 0-9)" -ge 8 2>/dev/null && echo /dev/shm/minicontainer-bench || echo bench/out)
bench:
	$(PYTHON) bench/bench_run.py
	$(PYTHON) bench/bench_run.py --cgroup v2 --cgroupns --pause 0.1
	$(PYTHON) bench/bench_pull.py --out $(BENCH_OUT)
	$(PYTHON) bench/bench_pull_interrupt.py --out $(BENCH_OUT)
	$(PYTHON) bench/bench_network.py
	$(PYTHON) bench/bench_overlay.py
	$(PYTHON) bench/bench_detached.py
	$(PYTHON) bench/bench_rootless.py

demo:
	$(PYTHON) tools/demo.py

clean:
	rm -rf bench/out /dev/shm/minicontainer-bench .pytest_cache
