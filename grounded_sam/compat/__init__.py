"""Drop-in interfaces for code written against other projects (``autodistill``): see its modules."""
