# Two commands do all set-up on a fresh machine (Python 3.11+, make; apt for system packages).
#   make demo   creates .venv, installs poc-twin, runs the CAR-T recipe on the simulated bench
#   make test   installs what the tests need and runs every test (unit + hardware-in-the-loop)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test hil lint bench-check clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/poc-twin run recipes/car_t_autologous.yaml --bench benches/sim.yaml \
	  --patient-id DEMO-P-0001 --bag-id DEMO-BAG-0001 --simulated-operator 2 --simulated-qc-lab --pace 60

# What the telemetry/control-site tests start as real servers: a broker, a database, a browser.
# Installs only what is missing (apt, as root or with sudo); `make demo` needs none of it.
SYSTEM_BINS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients chromium:chromium
system-deps:
	@missing=""; \
	for pair in $(SYSTEM_BINS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  echo "installing:$$missing"; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing; \
	fi

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: system-deps $(STAMP)
	$(BIN)/ruff check twin drivers tests hil_tests benchmarks
	$(BIN)/pytest -q tests hil_tests --junitxml=reports/junit.xml --hil-report=reports/fault-matrix.md; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

# The HIL suite alone, on any bench: make hil BENCH=benches/example-lab.yaml
BENCH ?= benches/sim.yaml
hil: $(STAMP)
	$(BIN)/pytest -q hil_tests --bench $(BENCH) --junitxml=reports/hil-junit.xml \
	  --hil-report=reports/fault-matrix.md

lint: $(STAMP)
	$(BIN)/ruff check twin drivers tests hil_tests benchmarks
	$(BIN)/ruff format --check twin drivers tests hil_tests benchmarks

bench-check: $(STAMP)
	$(BIN)/poc-twin bench check --bench benches/sim.yaml

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
