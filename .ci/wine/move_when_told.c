/* A Windows program that moves a file and writes to it while someone else has it open, the
 * way a user's file manager and editor do: the Wine smoke test runs it while iwant hashes the
 * file, to show that the node's handle lets both happen.
 *
 * Writes READY once it is waiting, then waits (at most 120 s) for GO to exist, moves FROM to
 * TO (MoveFileExW), opens TO for writing as an editor does (sharing reading only), appends one
 * byte, and exits 0. Any failure prints Windows' error code and exits 1.
 *
 * Usage: move_when_told.exe READY GO FROM TO */
#include <windows.h>
#include <stdio.h>

int wmain(int argc, wchar_t **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: move_when_told READY GO FROM TO\n");
        return 2;
    }
    HANDLE ready = CreateFileW(argv[1], GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    if (ready == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "move_when_told: cannot write READY: error %lu\n", GetLastError());
        return 1;
    }
    CloseHandle(ready);
    for (int waited = 0; GetFileAttributesW(argv[2]) == INVALID_FILE_ATTRIBUTES; waited++) {
        if (waited > 120000) {
            fprintf(stderr, "move_when_told: GO never came\n");
            return 1;
        }
        Sleep(1);
    }
    if (!MoveFileExW(argv[3], argv[4], 0)) {
        fprintf(stderr, "move_when_told: the move failed: error %lu\n", GetLastError());
        return 1;
    }
    HANDLE file = CreateFileW(argv[4], FILE_APPEND_DATA, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                              FILE_ATTRIBUTE_NORMAL, NULL);
    if (file == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "move_when_told: cannot open the moved file for writing: error %lu\n",
                GetLastError());
        return 1;
    }
    DWORD written = 0;
    if (!WriteFile(file, "x", 1, &written, NULL) || written != 1) {
        fprintf(stderr, "move_when_told: the write failed: error %lu\n", GetLastError());
        return 1;
    }
    CloseHandle(file);
    printf("moved and appended to\n");
    return 0;
}
