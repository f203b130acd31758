# Shortcuts for scripts/dev, which does the set-up itself (a fresh Debian machine may lack make:
# `bash scripts/dev run` and `bash scripts/dev test` are the same commands).
.PHONY: run demo test bench
run:
	bash scripts/dev run
demo:
	bash scripts/dev demo
test:
	bash scripts/dev test
bench:
	bash scripts/dev bench
