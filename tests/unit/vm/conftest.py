from tests.unit.vm.cachedir.fake import cache  # noqa: F401  (the fixture)
