"""Functions pickled by value keep their source file, whatever cloudpickle does.

cloudpickle 3.1.3 started to record every function pickled by value as written
in ``"<dynamic-code>"``; remote tracebacks then lost their file and source
lines. These tests pin the behaviour users see, on the installed cloudpickle.
"""
import pickle
import traceback

from ember.core_worker.serialization import pickle_by_value


def _fails(x):
    def inner(y):
        return [1 / v for v in (y,)]
    return inner(x)


def test_loaded_function_and_nested_code_keep_their_file():
    loaded = pickle.loads(pickle_by_value(_fails))
    assert loaded is not _fails
    assert loaded.__code__.co_filename == __file__
    nested = [c for c in loaded.__code__.co_consts if hasattr(c, "co_filename")]
    assert nested and all(c.co_filename == __file__ for c in nested)
    assert loaded(2) == [0.5]


def test_traceback_of_loaded_function_shows_the_source_line():
    loaded = pickle.loads(pickle_by_value(_fails))
    try:
        loaded(0)
    except ZeroDivisionError:
        text = traceback.format_exc()
    assert f'File "{__file__}"' in text
    assert "return [1 / v for v in (y,)]" in text


def test_lambda_and_class_methods_keep_their_file():
    class Local:
        def method(self):
            return "ok"
    square = lambda v: v * v  # noqa: E731
    cls, fn = pickle.loads(pickle_by_value((Local, square)))
    assert cls.method.__code__.co_filename == __file__
    assert fn.__code__.co_filename == __file__
    assert cls().method() == "ok" and fn(3) == 9
