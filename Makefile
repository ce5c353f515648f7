# fnhook: `make up` runs the platform locally, `make test` proves it. See README.md.
.PHONY: up down test lint bench build status

up:
	@scripts/up.sh

down:
	@scripts/infra.sh down

status:
	@scripts/infra.sh status

build:
	@mkdir -p bin && for s in gateway mgmt handler builder; do go build -trimpath -o bin/$$s ./services/$$s || exit 1; done

test:
	@scripts/test.sh

lint:
	@scripts/lint.sh

bench:
	@scripts/bench.sh
