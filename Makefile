# One-command set-up and checks. Everything installs into .venv; torch is the CPU wheel, pinned.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps test lint demo clean

DEMO ?= demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH_PIN)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# espeak-ng synthesises the test and demo corpora; sox is only for people who want to listen/convert.
system-deps:
	@command -v espeak-ng >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y espeak-ng)

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps lint
	$(PY) -m pytest tests

# The demo: a synthetic corpus, LoRA on the offline Whisper tiny.en encoder next to the MFCC
# baseline on the same folds, the report, and predictions for clips of fold1's test speakers (spk05, spk10).
DEMO_FOLDS ?= fold1
DEMO_EPOCHS ?= 8
DEMO_RUN := $(DEMO)/runs/whisper-tiny.en-lora
demo: install system-deps
	rm -rf $(DEMO)
	$(VENV)/bin/sertune synth --out $(DEMO)/corpus
	$(VENV)/bin/sertune baseline $(DEMO)/corpus --folds $(DEMO_FOLDS) --out $(DEMO)/runs/mfcc-baseline
	$(VENV)/bin/sertune train $(DEMO)/corpus --backbone whisper-tiny.en --method lora --folds $(DEMO_FOLDS) \
		--epochs $(DEMO_EPOCHS) --lr 1e-3 --precision bf16 --out $(DEMO_RUN)
	$(VENV)/bin/sertune report $(DEMO_RUN) $(DEMO)/runs/mfcc-baseline --out $(DEMO)/report
	$(VENV)/bin/sertune predict $(DEMO_RUN) $(DEMO)/corpus/audio/spk05-*-003.flac

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
