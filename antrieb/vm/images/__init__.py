"""Images: recipes (``images/*.yaml``) -> built artefacts (kernel, initramfs, disk).

- :mod:`~antrieb.vm.images.recipes` reads and resolves the recipes;
- :mod:`~antrieb.vm.images.contents` is what every image holds beyond its packages;
- :mod:`~antrieb.vm.images.builder` runs the build steps (mmdebstrap, kernel, initramfs,
  disk), :mod:`~antrieb.vm.images.initramfs` makes antrieb's own initramfs;
- :mod:`~antrieb.vm.images.artifacts` and :mod:`~antrieb.vm.images.cache` keep the
  built images, keyed by the recipe's content hash.

Example::

    from antrieb.vm import images
    art = images.ensure("debian-12")     # builds once (minutes), then returns at once
    art.kernel, art.initrd, art.disk
"""

from antrieb.vm.images.artifacts import ImageArtifacts, artifact_dir, images_root
from antrieb.vm.images.cache import build, ensure, list_images, prune
from antrieb.vm.images.recipes import Recipe, catalogue, get_recipe, load_recipe_file, resolve

__all__ = ["ImageArtifacts", "Recipe", "artifact_dir", "build", "catalogue", "ensure",
           "get_recipe", "images_root", "list_images", "load_recipe_file", "prune", "resolve"]
