build-san/src/util.o: src/util.c src/util.h comm/comm.h
src/util.h:
comm/comm.h:
