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
# slurm-wlm and munge: tests/slurm_cluster.py starts a real single-node SLURM cluster for the sweep's SLURM executor
# (recommends are not needed: every plugin it loads is in slurm-wlm-basic-plugins). One apt-get update at most;
# /usr/sbin is searched too because the daemons live there, outside a normal user's PATH. chromium and
# chromium-driver: the web page's test (tests/test_web.py) drives a real headless browser.
system-deps:
	@missing=$$(for dep in espeak-ng:espeak-ng munged:munge slurmctld:slurm-wlm slurmd:slurm-wlm sbatch:slurm-wlm \
		chromium:chromium chromedriver:chromium-driver; do \
		PATH="$$PATH:/usr/sbin:/sbin" command -v $${dep%%:*} >/dev/null || echo $${dep#*:}; done | sort -u); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

lint: install
	$(VENV)/bin/ruff check .

test: install system-deps lint
	$(PY) -m pytest tests

# The demo: a synthetic corpus; on the same fold, the MFCC baseline, the default (speaker-normalised)
# head on the frozen Whisper tiny.en encoder (layer outputs cached), the linear probe on the same
# cached features (globally and per speaker standardised), and LoRA; the report; predictions for clips of fold1's test speakers (spk05, spk10). DEMO_PRECISION=auto
# is fp32 unless the CPU has native bf16 (AMX / AVX-512-BF16). `make demo` deletes $(DEMO)/ first.
DEMO_FOLDS ?= fold1
DEMO_EPOCHS ?= 4
DEMO_FROZEN_EPOCHS ?= 30
DEMO_PRECISION ?= auto
DEMO_BACKBONE := whisper-tiny.en
DEMO_RUN := $(DEMO)/runs/$(DEMO_BACKBONE)
SERTUNE := $(VENV)/bin/sertune
DEMO_TRAIN := $(SERTUNE) train $(DEMO)/corpus --backbone $(DEMO_BACKBONE) --folds $(DEMO_FOLDS) \
	--precision $(DEMO_PRECISION)
demo: install system-deps
	rm -rf $(DEMO)
	$(SERTUNE) synth --out $(DEMO)/corpus
	$(SERTUNE) baseline $(DEMO)/corpus --folds $(DEMO_FOLDS) --out $(DEMO)/runs/mfcc-baseline
	$(DEMO_TRAIN) --method frozen --epochs $(DEMO_FROZEN_EPOCHS) --out $(DEMO_RUN)-frozen
	$(SERTUNE) baseline $(DEMO)/corpus --folds $(DEMO_FOLDS) --features $(DEMO_BACKBONE) --out $(DEMO)/runs/linear-probe
	$(SERTUNE) baseline $(DEMO)/corpus --folds $(DEMO_FOLDS) --features $(DEMO_BACKBONE) --normalization speaker \
		--out $(DEMO)/runs/linear-probe-speaker
	$(DEMO_TRAIN) --method lora --epochs $(DEMO_EPOCHS) --out $(DEMO_RUN)-lora
	$(SERTUNE) report $(DEMO)/runs/mfcc-baseline $(DEMO)/runs/linear-probe $(DEMO)/runs/linear-probe-speaker \
		$(DEMO_RUN)-frozen $(DEMO_RUN)-lora --out $(DEMO)/report
	@echo
	@echo "What the figures mean ($(DEMO_FOLDS): 6 training, 2 dev and 2 unseen test speakers, 200 test clips):"
	@echo "  UAR: unweighted average recall, the mean of the 4 classes' recalls in %; chance is 25."
	@echo "  mfcc-statistics: no neural network; 80 MFCC statistics per clip, normalised per speaker, logistic regression."
	@echo "  linear-probe: the frozen encoder's layer outputs averaged over each clip, logistic regression;"
	@echo "    the second one first standardises each speaker's features over that speaker's own clips."
	@echo "  frozen: layer outputs standardised per speaker, then the study's head (weighted layer sum,"
	@echo "    1x1 convolutions, pooling, 2 linear layers); the encoder frozen."
	@echo "  lora: the same head plus rank-16 LoRA in every feed-forward block of the encoder, tuned from a head"
	@echo "    first trained 20 epochs on the frozen features (its epoch 0; kept if no LoRA epoch beats it on dev)."
	@echo "  One clip is 0.5 points of UAR on this fold: differences of a few points are noise. See README, Quick start."
	@echo
	$(SERTUNE) predict $(DEMO_RUN)-frozen $(DEMO)/corpus/audio/spk05-*-003.flac

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
