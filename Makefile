# Herald: the two commands.
#   make up    installs what is missing, builds, and runs the whole stack locally
#              behind nginx on http://127.0.0.1:8080/ (scripts/herald-up.sh; Ctrl-C stops it)
#   make test  installs what is missing, builds with ASan/UBSan, runs every test
BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc)

.PHONY: up test deps test-deps build bench clean format

deps:
	@scripts/deps.sh

test-deps:
	@scripts/deps.sh test

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_TESTS=OFF
	cmake --build $(BUILD) -j $(JOBS)

up: build
	scripts/herald-up.sh $(BUILD)

test: test-deps
	cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DHERALD_SANITIZE=ON -DHERALD_TESTS=ON
	cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure --timeout 600

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(TEST_BUILD)

# libFuzzer targets in fuzz/ (clang), each for FUZZ_SECONDS (FUZZ_TARGETS="gateway http": some);
# crashes land in build-fuzz/crashes_*.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz: test-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS="$(FUZZ_TARGETS)" fuzz/run.sh build-fuzz
