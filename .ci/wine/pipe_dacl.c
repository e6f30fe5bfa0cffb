/* Prints the DACL of a named pipe in SDDL form, then the SID of the user this program runs as,
 * one per line. The Wine smoke test compares them: iwant's control pipe must admit its own
 * user and SYSTEM, and no one else.
 *
 * Usage: pipe_dacl.exe \\.\pipe\NAME */
#include <windows.h>
#include <aclapi.h>
#include <sddl.h>
#include <stdio.h>

int wmain(int argc, wchar_t **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: pipe_dacl \\\\.\\pipe\\NAME\n");
        return 2;
    }
    /* READ_CONTROL only: enough to read the descriptor, and the node sees a client that
     * sends nothing and goes. */
    HANDLE pipe = CreateFileW(argv[1], READ_CONTROL, 0, NULL, OPEN_EXISTING, 0, NULL);
    if (pipe == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "pipe_dacl: cannot open the pipe: error %lu\n", GetLastError());
        return 1;
    }
    PACL dacl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD rc = GetSecurityInfo(pipe, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL,
                               &dacl, NULL, &sd);
    if (rc != ERROR_SUCCESS) {
        fprintf(stderr, "pipe_dacl: GetSecurityInfo: error %lu\n", rc);
        return 1;
    }
    LPWSTR sddl = NULL;
    if (!ConvertSecurityDescriptorToStringSecurityDescriptorW(sd, SDDL_REVISION_1,
                                                              DACL_SECURITY_INFORMATION, &sddl,
                                                              NULL)) {
        fprintf(stderr, "pipe_dacl: cannot write the descriptor: error %lu\n", GetLastError());
        return 1;
    }
    HANDLE token;
    BYTE buf[256];
    DWORD len = 0;
    LPWSTR sid = NULL;
    if (!OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token) ||
        !GetTokenInformation(token, TokenUser, buf, sizeof buf, &len) ||
        !ConvertSidToStringSidW(((TOKEN_USER *)buf)->User.Sid, &sid)) {
        fprintf(stderr, "pipe_dacl: cannot read this user's SID: error %lu\n", GetLastError());
        return 1;
    }
    printf("%ls\n%ls\n", sddl, sid);
    return 0;
}
