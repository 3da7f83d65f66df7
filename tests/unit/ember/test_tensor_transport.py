"""Ray's tensor-transport API: names are checked, values take the object store."""
import dataclasses

import pytest

import ember
from ember.experimental import (CommunicatorMetadata, TensorTransportManager,
                                TensorTransportMetadata, register_tensor_transport)
from ember.experimental import tensor_transport


class _Manager(TensorTransportManager):
    def tensor_transport_backend(self):
        return "unit_test_shm"

    @staticmethod
    def is_one_sided():
        return True

    @staticmethod
    def can_abort_transport():
        return False

    def actor_has_tensor_transport(self, actor):
        return True

    def extract_tensor_transport_metadata(self, obj_id, rdt_object):
        return TensorTransportMetadata(tensor_meta=[])

    def get_communicator_metadata(self, src_actor, dst_actor, backend=None):
        return CommunicatorMetadata()

    def recv_multiple_tensors(self, obj_id, meta, comm, target_buffers=None):
        return []

    def send_multiple_tensors(self, tensors, meta, comm):
        pass

    def garbage_collect(self, obj_id, meta, tensors):
        pass

    def abort_transport(self, obj_id, comm):
        pass


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(tensor_transport, "_registered", {})
    register_tensor_transport("unit_test_shm", ["cpu"], _Manager, list)


def test_metadata_subclasses_as_dataclasses_with_defaults():
    @dataclasses.dataclass
    class Custom(TensorTransportMetadata):
        name: str = ""
    meta = Custom(tensor_meta=[((3,), "int64")], tensor_device="cpu", name="x")
    assert meta.tensor_meta == [((3,), "int64")] and meta.name == "x"


def test_a_method_may_name_a_registered_or_builtin_transport(registered):
    for name in ("unit_test_shm", "UNIT_TEST_SHM", "gloo", "nccl", "nixl", "object_store"):
        @ember.method(tensor_transport=name)
        def produce(self):
            return 1
        assert produce.__ember_method_options__ == {"tensor_transport": name}


def test_an_unknown_transport_is_refused_with_how_to_register_one(registered):
    with pytest.raises(ValueError, match="register_tensor_transport"):
        ember.method(tensor_transport="carrier_pigeon")


def test_registering_needs_a_manager_class_and_a_new_name(registered):
    with pytest.raises(TypeError, match="TensorTransportManager"):
        register_tensor_transport("other", ["cpu"], object, list)
    with pytest.raises(ValueError, match="built-in"):
        register_tensor_transport("nccl", ["cuda"], _Manager, list)
