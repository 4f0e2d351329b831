build-san/src/config.o: src/config.c src/config.h
src/config.h:
