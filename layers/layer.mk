# What every layer's Makefile shares (sam build runs them for BuildMethod: makefile): Lambda's /opt is
# read-only, so a layer of sources is compiled again at every cold start; each layer therefore ships its
# bytecode, compiled by Python 3.13 (the functions' runtime) as unchecked-hash bytecode, which Python
# loads without checking it against a source, since the deployed files never change under it.
PYTHON ?= python3.13
TARGET := $(ARTIFACTS_DIR)/python
$(if $(ARTIFACTS_DIR),,$(error ARTIFACTS_DIR is not set (sam build sets it)))

# Refuses any other Python: bytecode loads only in the version that compiled it.
define check-python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13) and "the layer is compiled for Python 3.13")'
endef

define compile-layer
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(TARGET)"
endef

# $(call package-layer,PACKAGE_DIR): the layer holds that package alone, with its bytecode.
define package-layer
	$(check-python)
	rm -rf "$(TARGET)"
	mkdir -p "$(TARGET)"
	cp -R "$(1)" "$(TARGET)/"
	find "$(TARGET)" -name __pycache__ -prune -exec rm -rf {} +
	$(compile-layer)
endef
