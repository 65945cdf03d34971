def test_import():
    import jaxmlp, sys
    print(jaxmlp.__path__)
