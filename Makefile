# Two entry points: `make demo` (install, then classify a bundled image with the bundled model, offline)
# and `make test` (install, then run the test suite). Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned, so pip does not replace it when it resolves cliplens's own `torch` requirement.
# On a machine with a local CPU wheel of this version pip takes that; elsewhere it takes PyPI's build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean demo-model demo-robust-model

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[onnx,ray,serve,eval,raw,video,ocr,mcp,train,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/cliplens classify src/cliplens/examples/two-red-circles.png \
		"red circle" "blue circle" "red square" "green triangle" "yellow star" "purple cross" --model demo

# Everything: the layer contract (import-linter), then every test, slow ones included. The browser tests need
# Chromium: scripts/get-browser finds it or gets it (Debian's package, else Playwright's download), or says how.
# Test files run in parallel, one worker per core, each file's tests in order in one worker (-n auto --dist
# loadfile): much of the suite waits on fresh `cliplens` processes starting up.
test: $(STAMP)
	scripts/get-browser $(VENV)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# The inner loop: the layer contract and the tests not marked slow (browser, live server, Ray, training runs).
test-fast: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

# Reproduces the bundled demo model (about 100 minutes on a 2-core CPU): training from scratch on
# one-shape images, fine-tuning on a mix with two-shape images, then on a mix with words written on
# signs, then calibrating the model and its caption banks on separate images (the open-set detector also
# counts two-shape and signed scenes as inside the model's world).
DEMO_FILES := config.json model.safetensors tokenizer.json tokenizer_config.json preprocessor_config.json
demo-model: $(STAMP)
	$(BIN)/cliplens demo-data --out build/demo-data -n 200000 --seed 0 --overwrite
	$(BIN)/cliplens train build/demo-data/pairs.csv --out build/demo-model-base --config demo --steps 4500 \
		--batch-size 128 --lr 2e-3 --seed 0 --save-every 500 --overwrite
	$(BIN)/cliplens demo-data --out build/demo-mixed -n 100000 --seed 1 --mixed 0.5 --overwrite
	$(BIN)/cliplens train build/demo-mixed/pairs.csv --out build/demo-model --init build/demo-model-base \
		--steps 2500 --batch-size 128 --lr 8e-4 --seed 0 --save-every 500 --overwrite
	$(BIN)/cliplens demo-data --out build/demo-words -n 100000 --seed 2 --mixed 0.25 --words 0.5 --overwrite
	$(BIN)/cliplens train build/demo-words/pairs.csv --out build/demo-model-words --init build/demo-model \
		--steps 2000 --batch-size 128 --lr 1e-3 --seed 0 --save-every 500 --overwrite
	mkdir -p src/cliplens/models/demo
	cd build/demo-model-words && cp $(DEMO_FILES) ../../src/cliplens/models/demo/
	$(BIN)/cliplens demo-data --out build/demo-calib -n 2000 --seed 7 --overwrite
	$(BIN)/cliplens demo-data --out build/demo-world -n 1000 --seed 8 --mixed 0.5 --words 0.5 --overwrite
	$(BIN)/cliplens calibrate build/demo-calib/pairs.csv --model demo --backend torch --world build/demo-world/images \
		--out src/cliplens/models/demo/cliplens_calibration.json --overwrite
	$(BIN)/cliplens banks calibrate demo_shapes build/demo-calib/pairs.csv --column shape --label-format "a {}" \
		--model demo --backend torch --out src/cliplens/data/banks/demo_shapes.txt --overwrite
	$(BIN)/cliplens banks calibrate demo_colours build/demo-calib/pairs.csv --column colour \
		--model demo --backend torch --out src/cliplens/data/banks/demo_colours.txt --overwrite
	$(BIN)/cliplens banks calibrate demo_backgrounds build/demo-calib/pairs.csv --column background \
		--model demo --backend torch --out src/cliplens/data/banks/demo_backgrounds.txt --overwrite

# Reproduces demo-robust, the demo model adversarially fine-tuned so that its gradients draw shapes a person
# recognises (cliplens dream), beside the demo model rather than in its place (26 minutes on a shared 2-core CPU).
demo-robust-model: $(STAMP)
	$(BIN)/cliplens demo-data --out build/robust-data -n 30000 --seed 3 --mixed 0.25 --words 0.25 --overwrite
	$(BIN)/cliplens train build/robust-data/pairs.csv --out build/demo-robust --init demo --steps 900 \
		--batch-size 128 --lr 5e-4 --adversarial 1.0 --freeze text --save-every 300 --no-calibrate --overwrite
	mkdir -p src/cliplens/models/demo-robust
	cd build/demo-robust && cp $(DEMO_FILES) ../../src/cliplens/models/demo-robust/

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
