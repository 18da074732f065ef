# The two commands of the README. Both set up what is missing first (see scripts/setup.sh).
.PHONY: demo test
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
