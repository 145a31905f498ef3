"""forgelib: the library behind Forge, a declarative build system for language models.

Every DVC stage in ``dvc.yaml`` and every ``forge`` CLI command calls one entry point of this
package. See README.md for the DAG and ../shared/DESIGN.md for the layout.
"""

__version__ = "0.1.0"
