def square(p, report):
    return p["x"] ** 2
