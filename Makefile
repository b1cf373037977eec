# Two entry points for people: `make lab` and `make test`. Everything else is plumbing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8888
KERNEL := vision-workbook
# The stamp records the inputs of the install, so a second `make lab` installs nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)

.PHONY: lab test unit-test ci-data install data kernel release check-release nbval clean bench bench-grading browser-deps browser-test screenshots lint

$(STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install it (e.g. apt-get install python3.11) or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned, so no other package can pull a different build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

kernel: install
	@$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Vision Workbook (Python 3.11)" >/dev/null
	@$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Vision Workbook (Python 3.11)" >/dev/null

data: install
	$(PY) -m course_lib.data --profile $${COURSE_PROFILE:-auto}

lab: install data kernel
	$(VENV)/bin/jupyter lab lessons/ --port=$(PORT) $(if $(NO_BROWSER),--no-browser,) \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

release: install
	$(PY) -m autograder release

# The browser suite leaves about half of the two cores idle (it waits on JupyterLab and Chromium), so it runs beside
# the unit tests; each target's output is printed when it ends.
test: install kernel browser-deps
	$(MAKE) -j2 --output-sync=target lint ci-data
	$(MAKE) -j2 --output-sync=target unit-test browser-test

# The ci profile's data, made once (the tests read it); beside the lint gate, which needs one core of the two.
ci-data: install
	COURSE_PROFILE=ci $(PY) -m course_lib.data --profile ci

# The unit tests and the notebooks' nbval checks share one pool of two workers (a file each at a time), so neither
# waits for the other's slowest file; one math thread per process, or two workers' threads fight over two cores.
unit-test: install kernel
	COURSE_PROFILE=ci OMP_NUM_THREADS=1 $(PY) -m pytest tests solutions -n 2 --dist loadfile -q --ignore=tests/browser --durations=15 \
		$(NBVAL_ARGS)

# The lint gate: ruff (style, import order, unused names) over the tree, mypy over the grader and the checks.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The browser tests drive Debian's Chromium; CI runs as root, elsewhere apt-get needs sudo.
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; } || \
		{ echo "Chromium is needed for the browser tests: apt-get install -y chromium (as root)"; exit 1; }

# Every lesson in JupyterLab, driven like a student. On failure, see build/browser/failures/ and jupyterlab.log.
browser-test: install kernel browser-deps
	COURSE_PROFILE=ci OMP_NUM_THREADS=1 CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -p no:cacheprovider --durations=10 tests/browser

# Regenerate the README's screenshots (docs/img/) from a run of the browser tests.
screenshots: install kernel browser-deps
	COURSE_PROFILE=ci OMP_NUM_THREADS=1 CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -p no:cacheprovider tests/browser \
		--readme-images -k "not student"

NBVAL_ARGS := --nbval-lax --nbval-kernel-name $(KERNEL) --nbval-sanitize-with tests/nbval_sanitize.cfg \
	--nbval-cell-timeout 600

nbval: install kernel
	COURSE_PROFILE=ci OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile $(NBVAL_ARGS) solutions/

bench: install
	$(PY) benchmarks/fill_level.py

# Grading throughput: plain nbgrader against the autograder's warm workers (SMALL=1: 8 notebooks).
bench-grading: install kernel
	OMP_NUM_THREADS=1 $(PY) benchmarks/grading.py $(if $(SMALL),--small,)

clean:
	rm -rf $(VENV) data build *.egg-info
