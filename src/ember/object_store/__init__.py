"""The per-node shared-memory object store.

Large values (over ``max_direct_call_object_size``) live here, one copy per
node, readable by every process of the node without a copy. The pieces, from
the bottom up:

- :mod:`.arena`: the memory. One memfd per node, created by the raylet and
  mapped by its clients (read-write to write, read-only to read).
- :mod:`.allocator`: where objects go in the arena (best fit, coalescing).
- :mod:`.spill`: the spill-file format (verifiable: magic, id, size, CRC32).
- :mod:`.store`: the object table and its policy: pins, LRU eviction of
  secondary copies, spilling and restoring of primary copies. Runs on the
  raylet's loop; no sockets.
- :mod:`.service`: the store's RPC handlers in the raylet
  (:mod:`ember.protocol.object_store`).
- :mod:`.layout`: how a pickle-5 value (main stream + buffers) is laid out
  in one object.
- :mod:`.client`: :class:`~.client.StoreClient`, used by core workers: put
  copies in at memcpy speed, get returns read-only zero-copy views whose pin
  is released when the last view dies.
- :mod:`.object_manager`: copies objects between nodes' stores (pulls in
  chunks over TCP, straight into the arena), in the raylet.

Why not Ray's plasma (a separate store process over a Unix socket, with fds
passed per allocation): ember is pure Python, and the raylet already has a
connection to every local worker. Putting the table in the raylet removes a
process and a hop; the data path (memcpy into, views out of, one shared
mapping) never touches a socket either way.
"""
