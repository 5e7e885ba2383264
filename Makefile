# One command each: `make run` (the book's experiment) and `make test`; both set everything up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := /usr/share/datasets/fashion-mnist

.PHONY: install data run test test-fast bench study docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,plot,docs,notebook,tune]'
	touch $@

# Fashion-MNIST from Debian's package when we can install it; otherwise fmtransfer looks in
# --data-dir, $$FMTRANSFER_DATA and Keras' cache, and downloads as a last resort.
data:
	@if [ -f $(DATA)/train-images-idx3-ubyte.gz ]; then echo "data: $(DATA)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "data: not in $(DATA); fmtransfer will search \$$FMTRANSFER_DATA and ~/.keras/datasets, then download"; fi

run: install data
	$(BIN)/fmtransfer run --config configs/book.toml

# Everything, what CI runs: real-data training and the notebook included. A worker per core, each
# taking whole test files (so a file's fixtures are built once); each test's name as it passes,
# then the ten slowest.
test: install data
	$(BIN)/python -m pytest -n auto --dist loadfile -v --durations=10

# The edit-test loop: no long real-data training, no notebook (well under 2 minutes).
test-fast: install data
	$(BIN)/python -m pytest -n auto --dist loadfile -q -m "not slow"

# The documentation site, into site/: strict, so a broken link, anchor or docstring reference fails.
docs: install
	$(BIN)/mkdocs build --strict --quiet

bench: install data
	$(BIN)/python bench/bench.py

clean:
	rm -rf runs site $(VENV) .pytest_cache
