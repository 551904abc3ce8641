"""The privileged side: everything that runs in a helper process.

``monitor`` holds the one fixed dispatch table; ``scoping`` drops privileges
in named steps and reads them back; ``kernel`` binds the syscalls (cffi);
``execute`` runs the commands policy allows. Nothing here imports ``cli`` or
``authoring``, and nothing here resolves a name a client sent.
"""
